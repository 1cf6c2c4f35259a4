//! `hold --procs K`: the parent re-executes loadgen K times and merges what the children
//! report.
//!
//! Each child runs `loadgen hold --child-json ...` with its share of the connections and prints
//! one [`ChildLine`] per line on stdout: a tick each second, a summary at the end. A reader
//! thread per child forwards lines to the parent, which emits second `t` once every child still
//! running has reported it.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crossbeam_channel::unbounded;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::hold::{HoldSummary, Tick};
use crate::latency::{self, LatencySummary};

/// One line of a child's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildLine {
    Tick(Tick),
    Summary(HoldSummary),
}

impl ChildLine {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

enum Message {
    Line(ChildLine),
    Ended,
}

/// Spawns `exe` once per argument list, merges their ticks (calling `on_tick` in order) and
/// returns the merged summary.
pub fn run_children(
    exe: &Path,
    child_args: &[Vec<String>],
    mut on_tick: impl FnMut(&Tick),
) -> io::Result<HoldSummary> {
    let mut children: Vec<Child> = Vec::with_capacity(child_args.len());
    let (tx, rx) = unbounded();
    for args in child_args {
        let mut child = match Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                kill_all(&mut children);
                return Err(io::Error::new(
                    e.kind(),
                    format!("starting {}: {e}", exe.display()),
                ));
            }
        };
        let Some(stdout) = child.stdout.take() else {
            kill_all(&mut children);
            return Err(io::Error::other("child stdout was not captured"));
        };
        children.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<ChildLine>(&line) {
                    Ok(parsed) => {
                        let _ = tx.send(Message::Line(parsed));
                    }
                    Err(_) => log::warn!("hold: unexpected child output: {line}"),
                }
            }
            let _ = tx.send(Message::Ended);
        });
    }
    drop(tx);

    let mut running = children.len();
    let mut pending: BTreeMap<u64, (usize, Tick, Histogram<u64>)> = BTreeMap::new();
    let mut summary = HoldSummary::default();
    let mut total_hist = latency::new_histogram();
    let mut summaries = 0;
    while running > 0 {
        let Ok(message) = rx.recv() else { break };
        match message {
            Message::Line(ChildLine::Tick(tick)) => {
                let slot = pending.entry(tick.t_s).or_insert_with(|| {
                    let t = Tick {
                        t_s: tick.t_s,
                        ..Tick::default()
                    };
                    (0, t, latency::new_histogram())
                });
                slot.0 += 1;
                slot.1.absorb(&tick, &mut slot.2);
            }
            Message::Line(ChildLine::Summary(s)) => {
                summaries += 1;
                merge_summary(&mut summary, &s, &mut total_hist);
            }
            Message::Ended => running -= 1,
        }
        // Emit, in order, every second all running children have reported.
        while let Some(entry) = pending.first_entry() {
            if entry.get().0 < running && running > 0 {
                break;
            }
            let (_, tick, _) = entry.remove();
            on_tick(&tick);
        }
    }
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            log::warn!("hold: a child exited with {status}");
        }
    }
    if summaries < child_args.len() {
        return Err(io::Error::other(format!(
            "{} of {} child processes ended without a summary (see their errors above)",
            child_args.len() - summaries,
            child_args.len()
        )));
    }
    summary.procs = child_args.len() as u64;
    summary.latency_us = LatencySummary::of(&total_hist);
    Ok(summary)
}

fn merge_summary(into: &mut HoldSummary, s: &HoldSummary, hist: &mut Histogram<u64>) {
    into.connections += s.connections;
    into.duration_s = into.duration_s.max(s.duration_s);
    into.max_established += s.max_established;
    into.established_at_end += s.established_at_end;
    into.failed += s.failed;
    into.pings += s.pings;
    into.ping_errors += s.ping_errors;
    latency::add_pairs(hist, &s.hist);
}

fn kill_all(children: &mut [Child]) {
    for child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}
