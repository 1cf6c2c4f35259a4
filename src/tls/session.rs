//! A listener's TLS session over rustls's unbuffered API, so that an idle TLS connection holds no
//! I/O buffer.
//!
//! rustls's buffered `ServerConnection` keeps a 4 KiB read buffer for its whole life, which made an
//! idle TLS keep-alive connection cost about 8 KB where a plain one costs under 200 B. Here the
//! records live in buffers of the worker thread instead: a read takes the socket's bytes into the
//! thread's read scratch, rustls decrypts them there, and the plaintext is copied straight into the
//! caller's buffer; a write encrypts into the thread's write scratch and hands that to the socket.
//! A session keeps bytes of its own only for what is in flight: the start of a record the socket
//! has not finished delivering, plaintext the caller had no room for, and ciphertext the socket
//! would not take yet. Each is freed as soon as it empties, so an idle session is rustls's state
//! and keys and nothing more.
//!
//! [`ServerTls`] keeps the conventions of the buffered adapter ([`crate::tls::TlsIo`]), which the
//! worker's cached readiness relies on:
//!
//! - A read returns fewer bytes than asked only when the session holds no more plaintext and the
//!   socket said `WouldBlock` or closed; `WouldBlock` means the same with nothing read.
//! - A write first sends pending ciphertext and returns `WouldBlock` while some is left; it
//!   returns short only when the socket stopped taking records; what the socket did not take goes
//!   with [`ServerTls::flush`] when the socket is writable again.
//! - The peer's `close_notify`, or its socket closing, reads as the end of the stream (`Ok(0)`); a
//!   protocol error sends rustls's alert (best effort) and reads as `InvalidData`.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig};

use crate::tls::sniff::{client_hello_sni, Hello};
use crate::tls::Handshake;

/// The largest TLS record on the wire: 2^14 bytes of plaintext plus TLS 1.2's allowance of 2,048
/// for expansion, plus the 5-byte header (RFC 5246 section 6.2.3).
const MAX_RECORD_BYTES: usize = 16_384 + 2_048 + 5;
/// Bytes one socket read may bring (after the start of a record kept from the last one).
const READ_BYTES: usize = 32 * 1024;
/// The least room a socket read is given after the bytes kept from the last one.
const MIN_READ_BYTES: usize = 1024;
/// Plaintext encrypted per round of a write: two full records.
const WRITE_PLAINTEXT_BYTES: usize = 2 * 16_384;
/// What TLS adds to a record at most with the suites sluice offers (header, inner content type,
/// AEAD tag, TLS 1.2's explicit nonce): generous.
const RECORD_OVERHEAD_BYTES: usize = 64;
/// Room for one encrypted alert record.
const CLOSE_NOTIFY_BYTES: usize = 2 + RECORD_OVERHEAD_BYTES;

/// The worker thread's buffers for records in flight, shared by all its sessions (a worker
/// serves one session at a time).
struct Scratch {
    read: Vec<u8>,
    write: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        read: vec![0; MAX_RECORD_BYTES + READ_BYTES],
        write: vec![0; WRITE_PLAINTEXT_BYTES + 2 * RECORD_OVERHEAD_BYTES],
    });
}

/// One client's TLS session on a TLS listener, from its first handshake byte on.
pub struct ServerTls {
    conn: UnbufferedServerConnection,
    /// Bytes in flight, allocated only while there are some.
    pending: Option<Box<Pending>>,
    /// The name the client asked for (SNI), read from its ClientHello when the access log wants
    /// it.
    sni: Option<Box<str>>,
    /// Whether the ClientHello is still to be read for its SNI name.
    wants_sni: bool,
    /// The peer sent `close_notify` or closed its socket: no more plaintext will come.
    ended: bool,
    /// rustls found an error in the peer's records: the session takes no more.
    failed: bool,
}

/// What a session holds between calls while records are in flight.
#[derive(Default)]
struct Pending {
    /// The start of a record the socket has not delivered whole yet.
    incoming: Vec<u8>,
    /// Plaintext decrypted for a read that had no room for it, from `plaintext_at` on.
    plaintext: Vec<u8>,
    plaintext_at: usize,
    /// Ciphertext the socket has not taken yet, from `outgoing_at` on.
    outgoing: Vec<u8>,
    outgoing_at: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.incoming.is_empty()
            && self.plaintext_at == self.plaintext.len()
            && self.outgoing_at == self.outgoing.len()
    }
}

/// What the session should do once rustls has consumed the input and may send application data.
enum Action<'a> {
    Nothing,
    /// Encrypt this plaintext into the scratch buffer; the ciphertext's length is returned.
    Encrypt(&'a [u8], &'a mut [u8]),
    CloseNotify,
}

/// Where a read's plaintext goes first: the caller's buffer, then the session's overflow.
struct Sink<'a> {
    buf: &'a mut [u8],
    filled: usize,
}

/// What a run of rustls did: how many input bytes it is done with (the rest is the start of a
/// record, or of a handshake message it is joining) and how many bytes of ciphertext it wrote.
struct Ran {
    used: usize,
    written: usize,
}

impl Ran {
    fn read(used: usize) -> Ran {
        Ran { used, written: 0 }
    }
}

/// What one socket read gave.
enum Records {
    Read,
    Blocked,
    Eof,
}

impl ServerTls {
    /// A session with `cfg` (the configuration of the handshake's time: a reload does not change
    /// it).
    /// `keep_sni`: read the client's SNI name for [`ServerTls::sni`] (the access log's).
    pub fn new(cfg: Arc<ServerConfig>, keep_sni: bool) -> Result<ServerTls, rustls::Error> {
        Ok(ServerTls {
            conn: UnbufferedServerConnection::new(cfg)?,
            pending: None,
            sni: None,
            wants_sni: keep_sni,
            ended: false,
            failed: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.conn.handshake_kind()
    }

    /// The server name the client sent (SNI), lower-cased.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// Whether ciphertext is waiting for the socket.
    pub fn wants_flush(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.outgoing_at < p.outgoing.len())
    }

    /// The in-flight buffers, made when first needed.
    fn pending(&mut self) -> &mut Pending {
        self.pending.get_or_insert_with(Box::default)
    }

    /// Frees the in-flight buffers once nothing is in them.
    fn settle(&mut self) {
        if self.pending.as_ref().is_some_and(|p| p.is_empty()) {
            self.pending = None;
        }
    }

    /// Moves the handshake on as far as the socket allows.
    pub fn handshake<S: Read + Write>(&mut self, sock: &mut S) -> io::Result<Handshake> {
        loop {
            self.flush(sock)?;
            if !self.conn.is_handshaking() {
                return Ok(Handshake::Done);
            }
            let mut nowhere = Sink {
                buf: &mut [],
                filled: 0,
            };
            match self.read_records(sock, &mut nowhere)? {
                Records::Read => {}
                Records::Blocked => return Ok(Handshake::Blocked),
                Records::Eof => return Ok(Handshake::Eof),
            }
        }
    }

    /// Sends pending ciphertext until the socket blocks; true when none is left.
    pub fn flush<S: Write>(&mut self, sock: &mut S) -> io::Result<bool> {
        let Some(p) = self.pending.as_deref_mut() else {
            return Ok(true);
        };
        while p.outgoing_at < p.outgoing.len() {
            match sock.write(&p.outgoing[p.outgoing_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => p.outgoing_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        p.outgoing = Vec::new();
        p.outgoing_at = 0;
        self.settle();
        Ok(true)
    }

    /// Queues `close_notify` and sends what the socket takes now; true when all of it went.
    pub fn close<S: Write>(&mut self, sock: &mut S) -> bool {
        if self.act(Action::CloseNotify).is_err() {
            return true;
        }
        self.flush(sock).unwrap_or(true)
    }

    /// Reads plaintext into `out`, as `Read::read` does (see the module's conventions).
    pub fn read<S: Read + Write>(&mut self, sock: &mut S, out: &mut [u8]) -> io::Result<usize> {
        let mut sink = Sink {
            buf: out,
            filled: 0,
        };
        self.take_plaintext(&mut sink);
        while sink.filled < sink.buf.len() && !self.ended {
            let records = self.read_records(sock, &mut sink)?;
            // Answers rustls owes the peer (a key update, an alert) go out now.
            if self.wants_flush() {
                let _ = self.flush(sock);
            }
            if !matches!(records, Records::Read) {
                break;
            }
        }
        match sink.filled {
            0 if !sink.buf.is_empty() && !self.ended => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// Encrypts and sends `bytes`, as `Write::write` does (see the module's conventions).
    pub fn write<S: Write>(&mut self, sock: &mut S, bytes: &[u8]) -> io::Result<usize> {
        if !self.flush(sock)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            let mut taken = 0;
            while taken < bytes.len() {
                let end = bytes.len().min(taken + WRITE_PLAINTEXT_BYTES);
                let n = self.encrypt(&bytes[taken..end], &mut scratch.write)?;
                taken = end;
                if !self.send(sock, &scratch.write[..n])? {
                    break;
                }
            }
            if taken == 0 && !bytes.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(taken)
        })
    }

    /// Encrypts `plain` into `into`; returns the ciphertext's length.
    fn encrypt(&mut self, plain: &[u8], into: &mut [u8]) -> io::Result<usize> {
        self.act(Action::Encrypt(plain, into)).map_err(invalid_data)
    }

    /// Runs rustls for a write or a close, with no new bytes but those kept from the last read:
    /// rustls may be joining a handshake message across them and must see them again. Returns the
    /// ciphertext's length for [`Action::Encrypt`].
    fn act(&mut self, action: Action<'_>) -> Result<usize, rustls::Error> {
        let mut kept = match self.pending.as_deref_mut() {
            Some(p) => std::mem::take(&mut p.incoming),
            None => Vec::new(),
        };
        let ran = self.run(&mut kept, None, action);
        if let Ok(ran) = &ran {
            kept.drain(..ran.used);
        }
        if !kept.is_empty() {
            self.pending().incoming = kept;
        }
        self.settle();
        ran.map(|ran| ran.written)
    }

    /// Sends `records` after any ciphertext queued before them; what the socket does not take is
    /// kept. True when all went.
    fn send<S: Write>(&mut self, sock: &mut S, records: &[u8]) -> io::Result<bool> {
        if self.wants_flush() {
            // A handshake message (a key update) came first: the records follow it.
            self.pending().outgoing.extend_from_slice(records);
            return self.flush(sock);
        }
        let mut sent = 0;
        while sent < records.len() {
            match sock.write(&records[sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if sent < records.len() {
            let p = self.pending();
            p.outgoing = records[sent..].to_vec();
            p.outgoing_at = 0;
            return Ok(false);
        }
        Ok(true)
    }

    /// Copies plaintext kept from an earlier read into `sink`.
    fn take_plaintext(&mut self, sink: &mut Sink<'_>) {
        let Some(p) = self.pending.as_deref_mut() else {
            return;
        };
        let kept = &p.plaintext[p.plaintext_at..];
        let n = kept.len().min(sink.buf.len() - sink.filled);
        sink.buf[sink.filled..sink.filled + n].copy_from_slice(&kept[..n]);
        sink.filled += n;
        p.plaintext_at += n;
        if p.plaintext_at == p.plaintext.len() {
            p.plaintext = Vec::new();
            p.plaintext_at = 0;
            self.settle();
        }
    }

    /// Reads the socket once into the thread's scratch (after the start of a record kept from
    /// the last read) and lets rustls take every whole record: plaintext to `sink`, then to the
    /// session; handshake messages to the outgoing queue.
    fn read_records<S: Read + Write>(
        &mut self,
        sock: &mut S,
        sink: &mut Sink<'_>,
    ) -> io::Result<Records> {
        SCRATCH.with(|scratch| {
            let buf = &mut scratch.borrow_mut().read;
            let kept = match self.pending.as_deref() {
                // rustls joins a handshake message across records in the buffer it is given: one
                // larger than the scratch leaves (no real client sends one) is refused.
                Some(p) if p.incoming.len() + MIN_READ_BYTES > buf.len() => {
                    return Err(invalid_data(rustls::Error::General(
                        "a TLS handshake message larger than sluice accepts".to_string(),
                    )));
                }
                Some(p) => {
                    buf[..p.incoming.len()].copy_from_slice(&p.incoming);
                    p.incoming.len()
                }
                None => 0,
            };
            let n = loop {
                match sock.read(&mut buf[kept..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Records::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                // The socket closed, with or without close_notify: an end of stream all the same
                // (many HTTP/1.1 clients do this; the request framing says whether it was whole).
                self.ended = true;
                return Ok(Records::Eof);
            }
            let input = &mut buf[..kept + n];
            if self.wants_sni {
                self.read_hello(input);
            }
            match self.run(input, Some(sink), Action::Nothing) {
                Ok(Ran { used, .. }) => {
                    if used < input.len() {
                        self.pending().incoming = input[used..].to_vec();
                    } else if let Some(p) = self.pending.as_deref_mut() {
                        p.incoming = Vec::new();
                    }
                    self.settle();
                    Ok(Records::Read)
                }
                Err(e) => {
                    // rustls's alert saying why, queued by `run`, goes now (best effort).
                    let _ = self.flush(sock);
                    Err(invalid_data(e))
                }
            }
        })
    }

    /// Takes the SNI name from the client's first record, once it is whole.
    fn read_hello(&mut self, input: &[u8]) {
        match client_hello_sni(input) {
            Hello::Incomplete => {}
            Hello::Sni(name) => {
                self.sni = name.map(|n| n.to_ascii_lowercase().into_boxed_str());
                self.wants_sni = false;
            }
            Hello::NotAHello => self.wants_sni = false,
        }
    }

    /// After a protocol error in the records before `rest`: rustls queued an alert saying why,
    /// which it hands out on the next call with the same remaining bytes (any other bytes would
    /// not match the handshake message it may be joining). The session is done after this.
    fn queue_alert(&mut self, rest: &mut [u8]) {
        self.failed = true;
        let status = self.conn.process_tls_records(rest);
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = status.state {
            let p = self.pending.get_or_insert_with(Box::default);
            let _ = encode(&mut p.outgoing, |out| alert.encode(out));
        }
    }

    /// Runs rustls over `input` until it needs more bytes, then does `action` if rustls may send
    /// application data.
    fn run(
        &mut self,
        input: &mut [u8],
        mut sink: Option<&mut Sink<'_>>,
        action: Action<'_>,
    ) -> Result<Ran, rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General("the TLS session failed".to_string()));
        }
        let mut used = 0;
        loop {
            let status = self.conn.process_tls_records(&mut input[used..]);
            let discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    used += discard;
                    self.queue_alert(&mut input[used..]);
                    return Err(e);
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let Ok(record) = record else {
                            self.failed = true;
                            return Err(rustls::Error::DecryptError);
                        };
                        deliver(record.payload, sink.as_deref_mut(), &mut self.pending);
                    }
                }
                ConnectionState::EncodeTlsData(mut message) => {
                    let p = self.pending.get_or_insert_with(Box::default);
                    encode(&mut p.outgoing, |out| message.encode(out))?;
                }
                // The encoded messages are in `outgoing`, which the next flush sends.
                ConnectionState::TransmitTlsData(sent) => sent.done(),
                ConnectionState::PeerClosed => self.ended = true,
                ConnectionState::Closed => {
                    self.ended = true;
                    used += discard;
                    return match action {
                        Action::Encrypt(..) => Err(rustls::Error::General(
                            "the TLS session is closed".to_string(),
                        )),
                        _ => Ok(Ran::read(used)),
                    };
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    used += discard;
                    return match action {
                        Action::Nothing => Ok(Ran::read(used)),
                        Action::Encrypt(plain, into) => traffic
                            .encrypt(plain, into)
                            .map(|written| Ran { used, written })
                            .map_err(encrypt_failed),
                        Action::CloseNotify => {
                            let mut alert = [0u8; CLOSE_NOTIFY_BYTES];
                            let n = traffic
                                .queue_close_notify(&mut alert)
                                .map_err(encrypt_failed)?;
                            let p = self.pending.get_or_insert_with(Box::default);
                            p.outgoing.extend_from_slice(&alert[..n]);
                            Ok(Ran::read(used))
                        }
                    };
                }
                // BlockedHandshake, and early data, which sluice does not accept.
                _ => {
                    used += discard;
                    return match action {
                        Action::Encrypt(..) => Err(rustls::Error::HandshakeNotComplete),
                        _ => Ok(Ran::read(used)),
                    };
                }
            }
            used += discard;
        }
    }
}

/// Copies a record's plaintext into the reader's room, and the rest into the session's overflow.
fn deliver(payload: &[u8], sink: Option<&mut Sink<'_>>, pending: &mut Option<Box<Pending>>) {
    let mut rest = payload;
    if let Some(sink) = sink {
        let n = rest.len().min(sink.buf.len() - sink.filled);
        sink.buf[sink.filled..sink.filled + n].copy_from_slice(&rest[..n]);
        sink.filled += n;
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        let p = pending.get_or_insert_with(Box::default);
        p.plaintext.extend_from_slice(rest);
    }
}

/// Appends a message rustls encodes to `out`, growing it to the size rustls asks for.
fn encode(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    let at = out.len();
    let need = match write(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(_) => return Ok(()),
    };
    out.resize(at + need, 0);
    match write(&mut out[at..]) {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(at);
            Err(rustls::Error::General(format!(
                "encoding a TLS message: {e}"
            )))
        }
    }
}

fn encrypt_failed(e: EncryptError) -> rustls::Error {
    match e {
        EncryptError::EncryptExhausted => rustls::Error::EncryptError,
        other => rustls::Error::General(format!("encrypting: {other}")),
    }
}

fn invalid_data(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::tls::testing::{client_io, client_writes, configs, move_bytes, Pipe};

    fn pair() -> (ServerTls, rustls::ClientConnection) {
        let (server, client) = configs();
        let name = rustls_pki_types::ServerName::try_from("a.example").unwrap();
        (
            ServerTls::new(server, true).unwrap(),
            rustls::ClientConnection::new(client, name).unwrap(),
        )
    }

    /// Runs both handshakes over pipes that take `room` bytes at a time, until both are done and
    /// every byte crossed.
    fn connect(
        server: &mut ServerTls,
        client: &mut rustls::ClientConnection,
        room: usize,
    ) -> (Pipe, Pipe) {
        let (mut s, mut c) = (Pipe::with_room(room), Pipe::with_room(room));
        for _ in 0..10_000 {
            let cs = client_io(&mut *client, &mut c).handshake().unwrap();
            move_bytes(&mut c, &mut s);
            let ss = server.handshake(&mut s).unwrap();
            move_bytes(&mut s, &mut c);
            let all_out = !server.wants_flush() && c.outbox.is_empty() && s.inbox.is_empty();
            if cs == Handshake::Done && ss == Handshake::Done && all_out {
                return (s, c);
            }
        }
        panic!("the handshake did not finish");
    }

    /// Reads from the server until it would block.
    fn drain(server: &mut ServerTls, s: &mut Pipe, into: &mut Vec<u8>) {
        let mut buf = [0u8; 1000];
        loop {
            match server.read(s, &mut buf) {
                Ok(0) => panic!("no end of stream was sent"),
                Ok(n) => into.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_handshake_and_a_request_cross_sockets_that_take_a_few_bytes_at_a_time() {
        let (mut server, mut client) = pair();
        let (mut s, mut c) = connect(&mut server, &mut client, 7);
        let request: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let (mut sent, mut received) = (0, Vec::new());
        for _ in 0..1_000_000 {
            let mut io = client_io(&mut client, &mut c);
            match io.write(&request[sent..]) {
                Ok(n) => sent += n,
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
            move_bytes(&mut c, &mut s);
            drain(&mut server, &mut s, &mut received);
            if received.len() == request.len() {
                break;
            }
        }
        assert_eq!(received, request);
        assert_eq!(server.sni(), Some("a.example"));
    }

    #[test]
    fn an_idle_session_holds_no_buffer() {
        let (mut server, mut client) = pair();
        let (mut s, mut c) = connect(&mut server, &mut client, usize::MAX);
        assert!(server.pending.is_none(), "after the handshake");
        client_writes(&mut client, &mut c, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // Half a record first: its start is kept until the rest comes.
        let half = c.outbox.len() / 2;
        s.inbox.extend(c.outbox.drain(..half));
        let mut buf = [0u8; 100];
        let err = server.read(&mut s, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(server.pending.is_some(), "the start of a record is kept");
        move_bytes(&mut c, &mut s);
        assert_eq!(server.read(&mut s, &mut buf).unwrap(), 27);
        assert_eq!(
            server.write(&mut s, b"HTTP/1.1 200 OK\r\n\r\n").unwrap(),
            19
        );
        assert!(server.pending.is_none(), "after a request and its answer");
    }

    #[test]
    fn a_short_read_means_the_socket_and_the_session_are_both_drained() {
        let (mut server, mut client) = pair();
        let (mut s, mut c) = connect(&mut server, &mut client, usize::MAX);
        client_writes(&mut client, &mut c, &[b'x'; 40_000]);
        move_bytes(&mut c, &mut s);
        let mut buf = vec![0u8; 30_000];
        assert_eq!(
            server.read(&mut s, &mut buf).unwrap(),
            30_000,
            "a full read"
        );
        assert!(server.pending.is_some(), "the rest of a record waits");
        assert_eq!(
            server.read(&mut s, &mut buf).unwrap(),
            10_000,
            "the rest, short"
        );
        let again = server.read(&mut s, &mut buf).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
        assert!(server.pending.is_none());
    }

    #[test]
    fn a_large_write_goes_on_while_the_socket_takes_it_and_the_rest_waits_for_a_flush() {
        let (mut server, mut client) = pair();
        let (mut s, mut c) = connect(&mut server, &mut client, usize::MAX);
        let big: Vec<u8> = (0..1usize << 20).map(|i| (i % 253) as u8).collect();
        assert_eq!(server.write(&mut s, &big).unwrap(), big.len());
        s.room = s.outbox.len() + 1000;
        let n = server.write(&mut s, &big).unwrap();
        assert!(n < big.len(), "short once the socket is full");
        assert!(server.wants_flush(), "records the socket did not take wait");
        let again = server.write(&mut s, &big).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
        s.room = usize::MAX;
        assert!(server.flush(&mut s).unwrap());
        assert!(server.pending.is_none());
        move_bytes(&mut s, &mut c);
        let mut got = Vec::new();
        let mut io = client_io(&mut client, &mut c);
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(k) = io.read(&mut buf) {
            got.extend_from_slice(&buf[..k]);
        }
        assert_eq!(got.len(), big.len() + n);
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], &big[..n]);
    }

    #[test]
    fn a_key_update_from_the_client_is_answered_and_traffic_goes_on() {
        let (mut server, mut client) = pair();
        let (mut s, mut c) = connect(&mut server, &mut client, usize::MAX);
        client.refresh_traffic_keys().unwrap();
        client_writes(&mut client, &mut c, b"after the update");
        move_bytes(&mut c, &mut s);
        let mut got = Vec::new();
        drain(&mut server, &mut s, &mut got);
        assert_eq!(got, b"after the update");
        server.write(&mut s, b"answer").unwrap();
        move_bytes(&mut s, &mut c);
        let mut buf = [0u8; 64];
        let n = client_io(&mut client, &mut c).read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"answer");
    }

    #[test]
    fn close_notify_reads_as_the_end_of_the_stream_both_ways() {
        let (mut server, mut client) = pair();
        let (mut s, mut c) = connect(&mut server, &mut client, usize::MAX);
        assert!(client_io(&mut client, &mut c).close());
        move_bytes(&mut c, &mut s);
        let mut buf = [0u8; 10];
        assert_eq!(server.read(&mut s, &mut buf).unwrap(), 0);
        assert!(server.close(&mut s));
        move_bytes(&mut s, &mut c);
        let n = client_io(&mut client, &mut c).read(&mut buf).unwrap();
        assert_eq!(n, 0, "the client read the server's close_notify");
    }

    #[test]
    fn a_socket_closed_without_close_notify_is_an_end_of_stream() {
        let (mut server, mut client) = pair();
        let (mut s, _c) = connect(&mut server, &mut client, usize::MAX);
        s.closed = true;
        let mut buf = [0u8; 10];
        assert_eq!(server.read(&mut s, &mut buf).unwrap(), 0);
    }

    #[test]
    fn a_write_or_close_while_rustls_joins_a_handshake_message_keeps_its_bytes() {
        let (server, client) = configs();
        let mut server = ServerTls::new(server, true).unwrap();
        let mut small = (*client).clone();
        // rustls's smallest fragment: the ClientHello comes in records of 27 bytes of payload.
        small.max_fragment_size = Some(32);
        let name = rustls_pki_types::ServerName::try_from("a.example").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(small), name).unwrap();
        let (mut s, mut c) = (Pipe::with_room(usize::MAX), Pipe::with_room(usize::MAX));
        client_io(&mut client, &mut c).handshake().unwrap();
        // Four whole records: part of the ClientHello, which rustls starts joining.
        s.inbox.extend(c.outbox.drain(..4 * 32));
        assert_eq!(server.handshake(&mut s).unwrap(), Handshake::Blocked);
        let early = server.write(&mut s, b"too early").unwrap_err();
        assert_eq!(early.kind(), io::ErrorKind::InvalidData);
        assert!(server.close(&mut s));
        move_bytes(&mut c, &mut s);
        assert_eq!(server.handshake(&mut s).unwrap(), Handshake::Blocked);
        assert_eq!(
            server.sni(),
            None,
            "the SNI of a hello over many records is not read"
        );
        move_bytes(&mut s, &mut c);
        for _ in 0..10 {
            client_io(&mut client, &mut c).handshake().unwrap();
            move_bytes(&mut c, &mut s);
            server.handshake(&mut s).unwrap();
            move_bytes(&mut s, &mut c);
        }
        assert!(!server.is_handshaking() && !client.is_handshaking());
    }

    #[test]
    fn a_handshake_message_larger_than_the_scratch_is_refused_without_a_panic() {
        let (server, _) = configs();
        let mut server = ServerTls::new(server, true).unwrap();
        let mut s = Pipe::with_room(usize::MAX);
        // A ClientHello that claims 60,000 bytes, in records of 16,384.
        let mut body = vec![1u8, 0x00, 0xea, 0x60];
        body.resize(60_004, 0x42);
        for chunk in body.chunks(16_384) {
            let len = u16::try_from(chunk.len()).unwrap().to_be_bytes();
            s.inbox.extend([0x16, 0x03, 0x01, len[0], len[1]]);
            s.inbox.extend(chunk);
        }
        let mut outcome = server.handshake(&mut s);
        for _ in 0..10 {
            if !matches!(outcome, Ok(Handshake::Blocked)) {
                break;
            }
            outcome = server.handshake(&mut s);
        }
        let err = outcome.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn garbage_is_an_error_and_an_alert() {
        let (server, _) = configs();
        let mut server = ServerTls::new(server, true).unwrap();
        let mut s = Pipe::with_room(usize::MAX);
        // A ClientHello of length 0.
        s.inbox.extend(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00");
        let err = server.handshake(&mut s).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(s.outbox.front(), Some(&0x15), "an alert record was sent");
    }
}
