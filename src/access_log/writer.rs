//! A worker's side of the access log: lines formatted into a buffer the worker owns, handed to
//! the log thread when full or after [`super::FLUSH_MS`], and dropped (counted) when the log
//! thread's channel is full. Nothing here blocks or takes a lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::format::{write_line, DateCache, Entry};
use super::{Batch, LogFormat, LogStats, BUFFER_BYTES, FLUSH_MS};

pub(crate) struct LogWriter {
    format: LogFormat,
    buf: Vec<u8>,
    lines: u64,
    /// When the first line still in `buf` was written (ms of [`crate::clock`]).
    first_line_ms: u64,
    tx: Sender<Batch>,
    spare: Receiver<Vec<u8>>,
    stats: Arc<LogStats>,
    dates: DateCache,
}

impl LogWriter {
    pub(super) fn new(
        format: LogFormat,
        tx: Sender<Batch>,
        spare: Receiver<Vec<u8>>,
        stats: Arc<LogStats>,
    ) -> LogWriter {
        LogWriter {
            format,
            buf: Vec::with_capacity(BUFFER_BYTES + 1024),
            lines: 0,
            first_line_ms: 0,
            tx,
            spare,
            stats,
            dates: DateCache::default(),
        }
    }

    /// Formats one line; hands the buffer over once it is full.
    pub(crate) fn log(&mut self, entry: &Entry<'_>, now_ms: u64) {
        if self.lines == 0 {
            self.first_line_ms = now_ms;
        }
        write_line(&mut self.buf, self.format, entry, &mut self.dates);
        self.lines += 1;
        if self.buf.len() >= BUFFER_BYTES {
            self.hand_over();
        }
    }

    /// How long the event loop may sleep before [`LogWriter::flush_if_due`] has work.
    pub(crate) fn poll_timeout_ms(&self, now_ms: u64) -> Option<u64> {
        (self.lines > 0).then(|| (self.first_line_ms + FLUSH_MS).saturating_sub(now_ms))
    }

    /// Hands over lines that waited [`FLUSH_MS`].
    pub(crate) fn flush_if_due(&mut self, now_ms: u64) {
        if self.lines > 0 && now_ms >= self.first_line_ms + FLUSH_MS {
            self.hand_over();
        }
    }

    /// Sends the buffer to the log thread, or drops its lines (counted) when the thread is
    /// behind; either way the worker goes on with an empty buffer.
    fn hand_over(&mut self) {
        let fresh = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUFFER_BYTES + 1024));
        let bytes = std::mem::replace(&mut self.buf, fresh);
        let batch = Batch {
            bytes,
            lines: std::mem::take(&mut self.lines),
        };
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => {
                self.stats.dropped.fetch_add(b.lines, Ordering::Relaxed);
                // Keep the allocation: the next lines go into it.
                let mut bytes = b.bytes;
                bytes.clear();
                self.buf = bytes;
            }
        }
    }
}

impl Drop for LogWriter {
    /// A worker that stops hands over what it has.
    fn drop(&mut self) {
        if self.lines > 0 {
            self.hand_over();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    fn entry() -> Entry<'static> {
        Entry {
            request: Some(b"GET /"),
            status: 200,
            ..Entry::default()
        }
    }

    #[test]
    fn a_full_channel_drops_and_counts_lines_without_blocking() {
        let (tx, rx) = bounded(1);
        let (_spare_tx, spare_rx) = bounded(1);
        let stats = Arc::new(LogStats::default());
        let mut w = LogWriter::new(LogFormat::Json, tx, spare_rx, stats.clone());
        let mut made = 0;
        while stats.dropped.load(Ordering::Relaxed) == 0 {
            w.log(&entry(), 1);
            made += 1;
        }
        w.flush_if_due(1 + FLUSH_MS);
        drop(w);
        let queued: u64 = rx.try_iter().map(|b: Batch| b.lines).sum();
        assert_eq!(queued + stats.dropped.load(Ordering::Relaxed), made);
        assert!(queued > 0);
    }

    #[test]
    fn lines_wait_at_most_the_flush_interval() {
        let (tx, rx) = bounded(4);
        let (_spare_tx, spare_rx) = bounded(1);
        let mut w = LogWriter::new(LogFormat::Json, tx, spare_rx, Arc::default());
        w.log(&entry(), 1_000);
        assert_eq!(w.poll_timeout_ms(1_040), Some(FLUSH_MS - 40));
        w.flush_if_due(1_050);
        assert!(rx.try_recv().is_err(), "not due yet");
        w.flush_if_due(1_000 + FLUSH_MS);
        assert_eq!(rx.try_recv().map(|b| b.lines).ok(), Some(1));
        assert_eq!(w.poll_timeout_ms(2_000), None);
    }
}
