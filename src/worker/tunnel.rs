//! Byte tunnels: TCP mode, and HTTP connections after `101 Switching Protocols`.
//!
//! Each direction has a buffer only while bytes are in flight (it goes back to the pool as soon as
//! it is empty), a side is read only while its buffer has room (backpressure), and an end of stream
//! read on one side is passed on as `shutdown(Write)` on the other once everything before it is
//! written. The tunnel closes when both directions have ended, on an error, or after the idle timeout.
//!
//! Each direction is a borrowed view ([`Direction`]) of the two sockets, the direction's buffer
//! and its end-of-stream flags, pumped in turn. A tunnel is one attempt for the whole connection:
//! in TCP mode only its connect can fail over to another backend ([`crate::worker::attempt`]).

use std::io::{self, Read, Write};

use crate::worker::buffer::{Buf, BufPool};
use crate::worker::conn::{read_into, write_from, BackendConnKey, ClientKey, HalfClose, Io, Ready};
use crate::worker::{Core, Next};

/// One direction of a tunnel, from a client to its backend or back.
struct Direction<'a, F, T> {
    from: (&'a mut F, &'a mut Ready),
    to: (&'a mut T, &'a mut Ready),
    buf: &'a mut Option<Box<Buf>>,
    eof: &'a mut bool,
    shut: &'a mut bool,
    /// Where to count bytes read and bytes written, if this direction is counted.
    read_count: Option<&'a mut u64>,
    write_count: Option<&'a mut u64>,
}

impl<F: Read, T: Write + HalfClose> Direction<'_, F, T> {
    /// Moves what it can; returns whether anything happened.
    fn pump(self, bufs: &mut BufPool) -> io::Result<bool> {
        let mut progress = false;
        let cap = bufs.buf_size();
        if !*self.eof && self.from.1.readable {
            let buf = self.buf.get_or_insert_with(|| bufs.get());
            match read_into(self.from.0, self.from.1, buf, cap) {
                Io::Done(n) => {
                    progress = true;
                    if let Some(count) = self.read_count {
                        *count += n as u64;
                    }
                }
                Io::Eof => {
                    *self.eof = true;
                    progress = true;
                }
                Io::Blocked => {}
                Io::Err(e) => return Err(e),
            }
        }
        if let Some(buf) = self.buf.as_mut() {
            match write_from(self.to.0, self.to.1, buf.bytes()) {
                Io::Done(n) => {
                    buf.consume(n);
                    progress = true;
                    if let Some(count) = self.write_count {
                        *count += n as u64;
                    }
                }
                Io::Blocked | Io::Eof => {}
                Io::Err(e) => return Err(e),
            }
        }
        bufs.release_if_empty(self.buf);
        if *self.eof && self.buf.is_none() && !*self.shut {
            *self.shut = true;
            progress = true;
            // The peer may have gone already; the other direction will find out.
            let _ = self.to.0.shut_write();
        }
        Ok(progress)
    }
}

impl Core {
    /// `Tunnel`: copies bytes both ways until both directions end.
    pub(super) fn tunnel(&mut self, k: ClientKey) -> Next {
        let Some(ex) = self.conns.exchange(k) else {
            return Next::Close;
        };
        let Some(bk) = ex.backend else {
            // Paced or queued: its timer or a freed connection dispatches it.
            return if ex.pace_until_ms != 0 || ex.queued {
                Next::Wait
            } else {
                Next::Close
            };
        };
        if ex.vet_first_bytes {
            if let Some(next) = self.vet_tunnel_start(k) {
                return next;
            }
        }
        match self.ensure_connected(k, bk) {
            Ok(true) => {}
            Ok(false) => return Next::Wait,
            Err(next) => return next,
        }
        let mut moved = false;
        loop {
            match self.tunnel_pass(k, bk) {
                Ok(Some(true)) => moved = true,
                Ok(Some(false)) => break,
                Ok(None) | Err(_) => return Next::Close,
            }
        }
        if moved {
            self.set_deadline(k, self.cfg.idle_timeout_ms);
        }
        Next::Wait
    }

    /// Pumps both directions once: whether anything moved, or `None` once both ended.
    fn tunnel_pass(&mut self, k: ClientKey, bk: BackendConnKey) -> io::Result<Option<bool>> {
        let Core {
            conns, io, metrics, ..
        } = self;
        let (c, b) = conns.pair_mut(k, bk);
        let Some(ex) = c.ex.as_deref_mut() else {
            return Ok(None);
        };
        let up = Direction {
            from: (&mut c.sock, &mut c.ready),
            to: (&mut b.sock, &mut b.ready),
            buf: &mut ex.req,
            eof: &mut ex.up_eof,
            shut: &mut ex.up_shut,
            read_count: Some(&mut metrics.current.bytes_in),
            write_count: None,
        }
        .pump(&mut io.bufs);
        let down = Direction {
            from: (&mut b.sock, &mut b.ready),
            to: (&mut c.sock, &mut c.ready),
            buf: &mut ex.resp,
            eof: &mut ex.down_eof,
            shut: &mut ex.down_shut,
            read_count: None,
            write_count: Some(&mut metrics.current.bytes_out),
        }
        .pump(&mut io.bufs);
        let (up, down) = (up?, down?);
        if ex.up_shut && ex.down_shut {
            return Ok(None);
        }
        Ok(Some(up || down))
    }
}
