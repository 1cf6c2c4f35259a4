//! Byte tunnels: TCP mode, and HTTP connections after `101 Switching Protocols`.
//!
//! Each direction has a buffer only while bytes are in flight (it goes back to the pool as soon as
//! it is empty), a side is read only while its buffer has room (backpressure), and an end of stream
//! read on one side is passed on as `shutdown(Write)` on the other once everything before it is
//! written. The tunnel closes when both directions have ended, on an error, or after
//! `--tunnel-idle-timeout` without a byte either way (never, when it is 0): a database session or
//! a pub/sub subscriber may stay silent for long, so tunnels do not share the HTTP keep-alive
//! `--idle-timeout`. Both sockets get TCP keepalive when the tunnel starts ([`keep_alive`]), so a
//! peer that vanished (a host powered off, a dropped route) is still found within minutes.
//!
//! Each direction is a borrowed view ([`Direction`]) of the two sockets, the direction's buffer
//! and its end-of-stream flags, pumped in turn. A tunnel is one attempt for the whole connection:
//! in TCP mode only its connect can fail over to another backend ([`crate::worker::attempt`]).

use std::io::{self, Read, Write};
use std::time::Duration;

use log::debug;
use mio::net::TcpStream;
use socket2::{SockRef, TcpKeepalive};

use crate::worker::buffer::{Buf, BufPool};
use crate::worker::conn::{read_into, write_from, BackendConnKey, ClientKey, HalfClose, Io, Ready};
use crate::worker::{Core, Next};

/// A tunnel's socket sends its first keepalive probe after this long without traffic...
pub(super) const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// ...then one this often...
pub(super) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and gives the peer up after this many unanswered: about two minutes in all.
pub(super) const KEEPALIVE_PROBES: u32 = 6;

/// Turns TCP keepalive on for a tunnel's socket, with [`KEEPALIVE_IDLE`], [`KEEPALIVE_INTERVAL`]
/// and [`KEEPALIVE_PROBES`] instead of the kernel's defaults (two hours before the first probe).
pub(super) fn keep_alive(sock: &TcpStream) -> io::Result<()> {
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    SockRef::from(sock).set_tcp_keepalive(&keepalive)
}

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
        self.start_keepalive(k, bk);
        let mut moved = false;
        loop {
            match self.tunnel_pass(k, bk) {
                Ok(Some(true)) => moved = true,
                Ok(Some(false)) => break,
                Ok(None) | Err(_) => return Next::Close,
            }
        }
        if moved {
            self.set_tunnel_deadline(k);
        }
        Next::Wait
    }

    /// Sets client `k`'s deadline `--tunnel-idle-timeout` from now, or clears it when that is 0.
    pub(super) fn set_tunnel_deadline(&mut self, k: ClientKey) {
        let at_ms = match self.cfg.tunnel_idle_timeout_ms {
            0 => 0,
            ms => self.now.ms + ms,
        };
        if let Some(c) = self.conns.client_mut(k) {
            c.deadline.set(at_ms, k.token(), &mut self.io.timers);
        }
    }

    /// TCP keepalive on both sockets of the tunnel, once.
    fn start_keepalive(&mut self, k: ClientKey, bk: BackendConnKey) {
        let (c, b) = self.conns.pair_mut(k, bk);
        let Some(ex) = c.ex.as_deref_mut().filter(|ex| !ex.keepalive_on) else {
            return;
        };
        ex.keepalive_on = true;
        // A Unix-socket backend is on this host: nothing to probe there.
        let backend_tcp = b.sock.tcp();
        for sock in std::iter::once(&c.sock.tcp).chain(backend_tcp) {
            if let Err(e) = keep_alive(sock) {
                debug!("TCP keepalive on a tunnel: {e}");
            }
        }
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
        let (in_before, out_before) = (metrics.current.bytes_in, metrics.current.bytes_out);
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
        ex.bytes_in += metrics.current.bytes_in - in_before;
        ex.bytes_out += metrics.current.bytes_out - out_before;
        let (up, down) = (up?, down?);
        if ex.up_shut && ex.down_shut {
            return Ok(None);
        }
        Ok(Some(up || down))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_turns_probes_on_with_the_tunnel_settings() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        keep_alive(&sock).unwrap();
        let s = SockRef::from(&sock);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(s.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }
}
