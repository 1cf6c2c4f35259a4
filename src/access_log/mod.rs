//! The access log (`--access-log PATH|stdout`, `--access-log-format json|combined`): one line per
//! HTTP request, or per TCP connection, written by a thread of its own so that no worker ever
//! waits for a disk, a pipe or a terminal.
//!
//! Each worker formats lines into a buffer of its own ([`LogWriter`]) and hands a full buffer (or,
//! on a short timer, a partly filled one) to the log thread over a bounded channel. When the
//! channel is full (the sink is slower than the traffic) the buffer's lines are dropped and
//! counted (`sluice_access_log_dropped_total`): the log loses lines rather than the proxy latency,
//! and nothing queues without bound. Buffers go back to the workers over a second channel, so a
//! steady log allocates nothing.
//!
//! Reopening (SIGUSR1, `sluice ctl log reopen`, `POST /api/log/reopen`) is for logrotate: the log
//! thread finishes the buffer in hand, then opens the path again (a new file after a rename), as
//! nginx does on USR1. It is asynchronous: the caller asks, and [`LogStats::reopens`] counts the
//! reopens done.

mod format;
mod sink;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

pub(crate) use format::Entry;
pub(crate) use writer::LogWriter;

/// Buffers of lines the log thread may have waiting; beyond it lines are dropped.
pub(crate) const CHANNEL_BUFFERS: usize = 64;
/// A worker hands its buffer over once it holds this many bytes...
pub(crate) const BUFFER_BYTES: usize = 32 * 1024;
/// ...or once its oldest line is this old.
pub(crate) const FLUSH_MS: u64 = 100;
/// At shutdown, how long the lines still queued may take to be written before sluice exits.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

impl LogTarget {
    pub fn parse(text: &str) -> Result<LogTarget, String> {
        match text {
            "" => Err("--access-log needs a path or stdout".into()),
            "stdout" | "-" => Ok(LogTarget::Stdout),
            path => Ok(LogTarget::File(PathBuf::from(path))),
        }
    }
}

/// How a line looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object a line.
    #[default]
    Json,
    /// Apache/nginx combined format.
    Combined,
}

/// `--access-log` and `--access-log-format`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub target: LogTarget,
    pub format: LogFormat,
}

/// What the log did, shared by the workers (drops), the log thread and the control thread.
#[derive(Debug, Default)]
pub(crate) struct LogStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub reopens: AtomicU64,
    pub write_errors: AtomicU64,
}

/// A buffer of whole lines and how many there are.
pub(crate) struct Batch {
    pub bytes: Vec<u8>,
    pub lines: u64,
}

/// Orders for the log thread besides lines.
pub(crate) enum Command {
    Reopen,
}

/// The running log: its thread, and what workers and the control thread need of it.
pub(crate) struct AccessLog {
    format: LogFormat,
    lines_tx: Sender<Batch>,
    spare_rx: Receiver<Vec<u8>>,
    control: LogControl,
    done_rx: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// What the control thread and the signal handler hold: the statistics and the reopen order.
#[derive(Clone)]
pub(crate) struct LogControl {
    pub stats: Arc<LogStats>,
    cmd_tx: Sender<Command>,
    pub target: LogTarget,
}

impl LogControl {
    /// Asks the log thread to open its file again (after logrotate renamed it).
    pub(crate) fn reopen(&self) {
        let _ = self.cmd_tx.send(Command::Reopen);
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }
}

impl AccessLog {
    /// Opens the target (a file is created if missing and appended to) and starts the log
    /// thread. An error is a message for the user.
    pub(crate) fn start(cfg: &AccessLogConfig) -> Result<AccessLog, String> {
        let out = sink::Output::open(&cfg.target)
            .map_err(|e| format!("--access-log {}: {e}", sink::describe(&cfg.target)))?;
        let (lines_tx, lines_rx) = bounded::<Batch>(CHANNEL_BUFFERS);
        let (spare_tx, spare_rx) = bounded::<Vec<u8>>(CHANNEL_BUFFERS);
        let (cmd_tx, cmd_rx) = unbounded();
        let (done_tx, done_rx) = bounded(1);
        let stats = Arc::new(LogStats::default());
        let sink = sink::Sink {
            out,
            target: cfg.target.clone(),
            lines: lines_rx,
            commands: cmd_rx,
            spare: spare_tx,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || {
                sink.run();
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start the access log thread: {e}"))?;
        Ok(AccessLog {
            format: cfg.format,
            lines_tx,
            spare_rx,
            control: LogControl {
                stats,
                cmd_tx,
                target: cfg.target.clone(),
            },
            done_rx,
            thread: Some(thread),
        })
    }

    /// A worker's writer.
    pub(crate) fn writer(&self) -> LogWriter {
        LogWriter::new(
            self.format,
            self.lines_tx.clone(),
            self.spare_rx.clone(),
            self.control.stats.clone(),
        )
    }

    pub(crate) fn control(&self) -> LogControl {
        self.control.clone()
    }

    /// After the workers stopped (their writers handed over their last lines): lets the log
    /// thread write what is queued, for at most [`FINISH_TIMEOUT`] (a sink that blocks, such as
    /// a pipe nobody reads, must not keep sluice from exiting).
    pub(crate) fn finish(mut self) {
        let AccessLog {
            lines_tx, done_rx, ..
        } = &mut self;
        let (closed, _) = bounded(0);
        drop(std::mem::replace(lines_tx, closed));
        if done_rx.recv_timeout(FINISH_TIMEOUT).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}
