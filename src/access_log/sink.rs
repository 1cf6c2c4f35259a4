//! The log thread: writes the workers' buffers to the file or stdout, in the order they arrive,
//! and reopens the file when asked. It is the only place that blocks on the log's output; the
//! workers see only a bounded channel they never wait on.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{select, Receiver, Sender};
use log::warn;

use super::{Batch, Command, LogStats, LogTarget};

/// The open output.
pub(super) enum Output {
    Stdout,
    File(File),
}

impl Output {
    pub(super) fn open(target: &LogTarget) -> io::Result<Output> {
        match target {
            LogTarget::Stdout => Ok(Output::Stdout),
            LogTarget::File(path) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Output::File),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Output::File(f) => f.write_all(bytes),
        }
    }
}

/// The target as a user names it.
pub(super) fn describe(target: &LogTarget) -> String {
    match target {
        LogTarget::Stdout => "stdout".into(),
        LogTarget::File(p) => p.display().to_string(),
    }
}

pub(super) struct Sink {
    pub(super) out: Output,
    pub(super) target: LogTarget,
    pub(super) lines: Receiver<Batch>,
    pub(super) commands: Receiver<Command>,
    pub(super) spare: Sender<Vec<u8>>,
    pub(super) stats: Arc<LogStats>,
}

impl Sink {
    /// Runs until every writer is gone and the lines they sent are written.
    pub(super) fn run(mut self) {
        loop {
            select! {
                recv(self.lines) -> batch => match batch {
                    Ok(batch) => self.write(batch),
                    Err(_) => return,
                },
                recv(self.commands) -> cmd => match cmd {
                    Ok(Command::Reopen) => self.reopen(),
                    // Nobody can ask any more; lines still come.
                    Err(_) => self.commands = crossbeam_channel::never(),
                },
            }
        }
    }

    fn write(&mut self, mut batch: Batch) {
        match self.out.write_all(&batch.bytes) {
            Ok(()) => {
                self.stats.written.fetch_add(batch.lines, Ordering::Relaxed);
            }
            Err(e) => {
                // Counted as dropped: the rotation test's arithmetic (written + dropped = lines
                // made) holds whatever happened to them.
                self.stats.dropped.fetch_add(batch.lines, Ordering::Relaxed);
                if self.stats.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(
                        "access log {}: {e}; its lines are dropped",
                        describe(&self.target)
                    );
                }
            }
        }
        batch.bytes.clear();
        let _ = self.spare.try_send(batch.bytes);
    }

    fn reopen(&mut self) {
        match Output::open(&self.target) {
            Ok(out) => {
                self.out = out;
                self.stats.reopens.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => warn!(
                "access log {}: cannot reopen ({e}); still writing to the old file",
                describe(&self.target)
            ),
        }
    }
}
