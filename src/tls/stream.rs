//! Driving a buffered rustls connection over a non-blocking socket, from an edge-triggered event
//! loop: TLS to backends (a listener's sessions use [`crate::tls::ServerTls`], which holds no
//! buffer while idle; backend connections are few, pooled and busy, so the buffered API's
//! simplicity is kept for them, and for the tests that play a client).
//!
//! rustls is sans-I/O: it takes ciphertext (`read_tls`), decrypts it (`process_new_packets`),
//! hands out plaintext (`reader`), takes plaintext (`writer`) and hands out ciphertext
//! (`write_tls`). [`TlsIo`] pairs one connection (server or client side: anything that derefs to
//! a `ConnectionCommon`) with its socket, for the length of one handler's call, and gives the pair
//! the `Read` and `Write` a plain socket has, with the conventions the worker's cached readiness
//! relies on:
//!
//! - A read returns fewer bytes than asked only when rustls holds no more plaintext and the
//!   socket said `WouldBlock` (or closed): so "a short read drained the socket" stays true, and
//!   plaintext rustls decrypted ahead is never stranded behind a readiness flag that went false.
//!   `WouldBlock` means the same: no plaintext and nothing more on the socket.
//! - A write first sends what ciphertext is still pending; while some is, it returns
//!   `WouldBlock`, so at most one buffer of records (rustls's limit) waits in memory. A write
//!   returns short only when the socket stopped taking records. Records a write produced but the
//!   socket did not take yet stay pending: the owner calls [`TlsIo::flush`] when the socket
//!   becomes writable, and before closing.
//! - The peer's `close_notify`, or its socket closing, reads as end of stream (`Ok(0)`); a
//!   protocol error sends rustls's alert (best effort) and reads as `InvalidData`.

use std::io::{self, Read, Write};
use std::ops::DerefMut;

use rustls::ConnectionCommon;

/// Where a handshake stands after [`TlsIo::handshake`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Complete: application data may flow (the last flight may still be pending, see
    /// [`TlsIo::wants_flush`]).
    Done,
    /// The socket has no more bytes for now.
    Blocked,
    /// The peer closed before the handshake completed.
    Eof,
}

/// A TLS connection and its socket, borrowed together.
pub struct TlsIo<'a, C, S> {
    pub conn: &'a mut C,
    pub sock: &'a mut S,
}

impl<Data, C, S> TlsIo<'_, C, S>
where
    C: DerefMut<Target = ConnectionCommon<Data>>,
    S: Read + Write,
{
    /// Moves the handshake on as far as the socket allows.
    pub fn handshake(&mut self) -> io::Result<Handshake> {
        loop {
            self.flush()?;
            if !self.conn.is_handshaking() {
                return Ok(Handshake::Done);
            }
            match self.read_records()? {
                Records::Read => {}
                Records::Blocked => return Ok(Handshake::Blocked),
                Records::Eof => return Ok(Handshake::Eof),
            }
        }
    }

    /// Whether ciphertext is waiting for the socket.
    pub fn wants_flush(&self) -> bool {
        self.conn.wants_write()
    }

    /// Sends pending ciphertext until the socket blocks; true when none is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues `close_notify` and sends what the socket takes now; true when all of it went.
    pub fn close(&mut self) -> bool {
        self.conn.send_close_notify();
        self.flush().unwrap_or(true)
    }

    /// Reads records from the socket into rustls and processes them.
    fn read_records(&mut self) -> io::Result<Records> {
        let n = loop {
            match self.conn.read_tls(self.sock) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Records::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if let Err(e) = self.conn.process_new_packets() {
            // rustls queued an alert saying why; the peer may read it.
            let _ = self.flush();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if n == 0 {
            return Ok(Records::Eof);
        }
        Ok(Records::Read)
    }
}

/// What one [`TlsIo::read_records`] found.
enum Records {
    Read,
    Blocked,
    Eof,
}

impl<Data, C, S> Read for TlsIo<'_, C, S>
where
    C: DerefMut<Target = ConnectionCommon<Data>>,
    S: Read + Write,
{
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        let mut socket_done = false;
        while got < out.len() {
            match self.conn.reader().read(&mut out[got..]) {
                Ok(0) => return Ok(got),
                Ok(n) => {
                    got += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket closed without close_notify: an end of stream all the same (many
                // HTTP/1.1 clients do this, and the request framing says whether it was whole).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(got),
                Err(e) => return Err(e),
            }
            if socket_done {
                break;
            }
            match self.read_records()? {
                Records::Read => {}
                Records::Blocked => socket_done = true,
                // rustls reports the end through the reader, on the next turn.
                Records::Eof => socket_done = true,
            }
            // Answers rustls owes the peer (a key update, an alert) go out with the next write.
            if self.conn.wants_write() {
                let _ = self.flush();
            }
        }
        if got == 0 && out.is_empty() {
            return Ok(0);
        }
        if got == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(got)
    }
}

impl<Data, C, S> Write for TlsIo<'_, C, S>
where
    C: DerefMut<Target = ConnectionCommon<Data>>,
    S: Read + Write,
{
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if !self.flush()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // rustls takes up to its buffer limit at a time; go on while the socket takes the
        // records, so that a short write means the socket is full, as it does for plain TCP.
        let mut taken = 0;
        while taken < bytes.len() {
            let n = self.conn.writer().write(&bytes[taken..])?;
            taken += n;
            if !self.flush()? || n == 0 {
                break;
            }
        }
        if taken == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        TlsIo::flush(self).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tls::testing::{client_io, client_writes, configs, move_bytes, Pipe};

    fn pair() -> (rustls::ServerConnection, rustls::ClientConnection) {
        let (server, client) = configs();
        let name = rustls_pki_types::ServerName::try_from("a.example").unwrap();
        (
            rustls::ServerConnection::new(server).unwrap(),
            rustls::ClientConnection::new(client, name).unwrap(),
        )
    }

    /// Runs both handshakes over small pipes until both are done.
    fn connect(
        server: &mut rustls::ServerConnection,
        client: &mut rustls::ClientConnection,
        room: usize,
    ) -> (Pipe, Pipe) {
        let mut s = Pipe {
            room,
            ..Pipe::default()
        };
        let mut c = Pipe {
            room,
            ..Pipe::default()
        };
        for _ in 0..1000 {
            let cs = client_io(&mut *client, &mut c).handshake().unwrap();
            move_bytes(&mut c, &mut s);
            let ss = TlsIo {
                conn: &mut *server,
                sock: &mut s,
            }
            .handshake()
            .unwrap();
            move_bytes(&mut s, &mut c);
            let flushed = TlsIo {
                conn: &mut *server,
                sock: &mut s,
            }
            .flush()
            .unwrap();
            move_bytes(&mut s, &mut c);
            // The client may still hold the server's tickets unread: they are read with the data.
            if cs == Handshake::Done && ss == Handshake::Done && flushed && c.outbox.is_empty() {
                return (s, c);
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn a_handshake_and_a_request_cross_sockets_that_take_a_few_bytes_at_a_time() {
        let (mut server, mut client) = pair();
        let (mut s, mut c) = connect(&mut server, &mut client, 7);
        let request = vec![b'q'; 50_000];
        let mut sent = 0;
        let mut received = Vec::new();
        let mut buf = [0u8; 1000];
        for _ in 0..1_000_000 {
            if sent < request.len() {
                let mut io = client_io(&mut client, &mut c);
                match io.write(&request[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
                }
            } else {
                let _ = client_io(&mut client, &mut c).flush();
            }
            move_bytes(&mut c, &mut s);
            let mut io = TlsIo {
                conn: &mut server,
                sock: &mut s,
            };
            loop {
                match io.read(&mut buf) {
                    Ok(0) => panic!("no end of stream was sent"),
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if received.len() == request.len() {
                break;
            }
        }
        assert_eq!(received, request);
    }

    #[test]
    fn a_short_read_means_the_socket_and_rustls_are_both_drained() {
        let (mut server, mut client) = pair();
        let (mut s, mut c) = connect(&mut server, &mut client, usize::MAX);
        client_writes(&mut client, &mut c, &[b'x'; 40_000]);
        move_bytes(&mut c, &mut s);
        let mut io = TlsIo {
            conn: &mut server,
            sock: &mut s,
        };
        let mut buf = vec![0u8; 30_000];
        assert_eq!(io.read(&mut buf).unwrap(), 30_000, "a full read");
        assert_eq!(io.read(&mut buf).unwrap(), 10_000, "the rest, short");
        let again = io.read(&mut buf).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_write_larger_than_rustls_buffers_goes_on_while_the_socket_takes_it() {
        let (mut server, mut client) = pair();
        let (mut s, _c) = connect(&mut server, &mut client, usize::MAX);
        let big = vec![b'y'; 1 << 20];
        let n = TlsIo {
            conn: &mut server,
            sock: &mut s,
        }
        .write(&big)
        .unwrap();
        assert_eq!(n, big.len());
        s.room = s.outbox.len() + 1000;
        let n = TlsIo {
            conn: &mut server,
            sock: &mut s,
        }
        .write(&big)
        .unwrap();
        assert!(n < big.len(), "short once the socket is full");
        let again = TlsIo {
            conn: &mut server,
            sock: &mut s,
        }
        .write(&big);
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn close_notify_reads_as_the_end_of_the_stream() {
        let (mut server, mut client) = pair();
        let (mut s, mut c) = connect(&mut server, &mut client, usize::MAX);
        assert!(client_io(&mut client, &mut c).close());
        move_bytes(&mut c, &mut s);
        let mut buf = [0u8; 10];
        let n = TlsIo {
            conn: &mut server,
            sock: &mut s,
        }
        .read(&mut buf)
        .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn garbage_is_an_error_and_an_alert() {
        let (mut server, _) = pair();
        let mut s = Pipe {
            room: usize::MAX,
            ..Pipe::default()
        };
        // A ClientHello of length 0.
        s.inbox.extend(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00");
        let err = TlsIo {
            conn: &mut server,
            sock: &mut s,
        }
        .handshake()
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(s.outbox.front(), Some(&0x15), "an alert record was sent");
    }
}
