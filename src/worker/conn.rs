//! The connections a worker holds, the keys that name them, and the non-blocking I/O helpers that
//! drive them.
//!
//! A client connection is small on purpose: an idle keep-alive client is a socket, its address, a
//! state and a deadline, and owns no buffer. Everything a request in flight needs lives in an
//! [`Exchange`], taken from the worker's free list when the first byte of a request arrives and
//! given back when the response is done. A backend connection is a socket bound to one backend and,
//! while busy, to one client. Both live in [`Conns`], two slabs whose keys are typed
//! ([`ClientKey`], [`BackendConnKey`]) so that one cannot be used for the other.
//!
//! A backend connection keeps its backend's shared counts itself: it counts as open from
//! [`BackendConn::connecting`] until it is dropped, and as a request in flight while it is bound
//! to a client (connecting or busy). Nothing else touches those two counts, so no path through the
//! session can leak one.
//!
//! Readiness is cached per socket ([`Ready`]): mio is edge-triggered, so a socket that was readable
//! stays marked readable until a read says otherwise (`WouldBlock`, or a short read with no pending
//! hang-up, the rule nginx uses to save the extra `read` per event). A side that cannot be read now
//! because its buffer is full keeps its mark and is read as soon as there is room.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::ops::{Index, IndexMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::net::TcpStream;
use slab::Slab;

use crate::backend::{Backend, BackendId, BackendStats, BackendStream};
use crate::worker::buffer::Buf;
use crate::worker::exchange::Exchange;
pub(super) use crate::worker::keys::{BackendConnKey, ClientKey, Owner, TableIndex};
use crate::worker::sock::ClientSock;
use crate::worker::timer::Deadline;

/// Cached readiness of one socket.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Ready {
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The peer hung up or reset; reads must continue until they return 0 or an error.
    pub(super) hup: bool,
}

impl Ready {
    pub(super) fn update(&mut self, event: &mio::event::Event) {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.readable = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            self.writable = true;
        }
        if event.is_read_closed() || event.is_error() {
            self.hup = true;
        }
    }
}

/// The result of one non-blocking read or write.
#[derive(Debug)]
pub(super) enum Io {
    /// This many bytes moved.
    Done(usize),
    /// Not now: not ready, or no room (read) / nothing to send (write).
    Blocked,
    /// The peer closed its sending side (reads only).
    Eof,
    Err(io::Error),
}

/// A stream whose sending side can be shut while its receiving side stays open: a client's TCP
/// connection or a backend connection (TCP or Unix).
pub(super) trait HalfClose {
    fn shut_write(&mut self) -> io::Result<()>;
}

impl HalfClose for TcpStream {
    fn shut_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl HalfClose for ClientSock {
    fn shut_write(&mut self) -> io::Result<()> {
        ClientSock::shut_write(self)
    }
}

impl HalfClose for BackendStream {
    fn shut_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Reads from `sock` into `buf`, keeping at most `limit` bytes held.
pub(super) fn read_into(
    sock: &mut impl Read,
    ready: &mut Ready,
    buf: &mut Buf,
    limit: usize,
) -> Io {
    if !ready.readable {
        return Io::Blocked;
    }
    let spare = buf.spare(limit);
    if spare.is_empty() {
        return Io::Blocked;
    }
    let want = spare.len();
    loop {
        match sock.read(spare) {
            Ok(0) => {
                ready.readable = false;
                return Io::Eof;
            }
            Ok(n) => {
                buf.fill(n);
                if n < want && !ready.hup {
                    ready.readable = false;
                }
                return Io::Done(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.readable = false;
                return Io::Blocked;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                ready.readable = false;
                return Io::Err(e);
            }
        }
    }
}

/// Writes as much of `bytes` to `sock` as it takes now.
pub(super) fn write_from(sock: &mut impl Write, ready: &mut Ready, bytes: &[u8]) -> Io {
    if !ready.writable || bytes.is_empty() {
        return Io::Blocked;
    }
    loop {
        match sock.write(bytes) {
            Ok(n) => {
                if n < bytes.len() {
                    ready.writable = false;
                }
                return Io::Done(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.writable = false;
                return Io::Blocked;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                ready.writable = false;
                return Io::Err(e);
            }
        }
    }
}

/// What a client connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientState {
    /// Waiting for the PROXY protocol header a listed balancer sends first
    /// ([`crate::worker::origin`]).
    ProxyHeader,
    /// A TLS listener's client before its handshake completes ([`crate::worker::tls`]).
    TlsHandshake,
    /// Waiting for (the rest of) a request head; in TCP mode, waiting for a backend.
    Head,
    /// A request is bound to a backend connection, which may still be connecting.
    Proxy,
    /// Sending a response sluice wrote itself; then close or read the next request.
    Answer { then_close: bool },
    /// Bytes both ways: TCP mode, or HTTP after `101 Switching Protocols`.
    Tunnel,
    /// Response sent, write side shut; reading and discarding until the client closes, so that
    /// unread input does not turn the close into a reset that destroys the response in flight.
    Linger,
}

pub(super) struct ClientConn {
    /// TCP, or TLS over TCP.
    pub(super) sock: ClientSock,
    pub(super) ready: Ready,
    pub(super) state: ClientState,
    /// The client: the socket's peer, or the one its PROXY header names.
    pub(super) peer_ip: IpAddr,
    pub(super) peer_port: u16,
    pub(super) deadline: Deadline,
    pub(super) ex: Option<Box<Exchange>>,
}

/// What a backend connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BackendState {
    /// Non-blocking connect in progress for `client`.
    Connecting,
    /// Carrying a request (or tunnel) for `client`.
    Busy,
    /// In the worker's idle pool.
    Idle,
}

pub(super) struct BackendConn {
    pub(super) sock: BackendStream,
    pub(super) ready: Ready,
    state: BackendState,
    /// Counted in the backend's in-flight gauge: from [`BackendConn::connecting`] or
    /// [`BackendConn::bind`] to [`BackendConn::release`] or the drop, whichever comes first.
    in_flight: bool,
    pub(super) backend_id: BackendId,
    /// Position of the backend in the table the connection was made under (a hint; checked by id).
    pub(super) table_index: TableIndex,
    stats: Arc<BackendStats>,
    /// The client it carries a request for, while connecting or busy.
    pub(super) client: ClientKey,
    pub(super) deadline: Deadline,
}

impl BackendConn {
    /// A connection being made to `backend` for `client`: counted open until it is dropped, and in
    /// flight until it is released.
    pub(super) fn connecting(
        sock: BackendStream,
        backend: &Backend,
        table_index: TableIndex,
        client: ClientKey,
    ) -> BackendConn {
        backend.stats.conns.fetch_add(1, Ordering::Relaxed);
        backend.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        BackendConn {
            sock,
            ready: Ready::default(),
            state: BackendState::Connecting,
            in_flight: true,
            backend_id: backend.id,
            table_index,
            stats: backend.stats.clone(),
            client,
            deadline: Deadline::default(),
        }
    }

    pub(super) fn state(&self) -> BackendState {
        self.state
    }

    pub(super) fn stats(&self) -> &BackendStats {
        &self.stats
    }

    /// The connect completed.
    pub(super) fn connected(&mut self) {
        self.state = BackendState::Busy;
    }

    /// Takes an idle pooled connection for `client`: in flight again.
    pub(super) fn bind(&mut self, client: ClientKey) {
        debug_assert_eq!(self.state, BackendState::Idle);
        self.release();
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.in_flight = true;
        self.state = BackendState::Busy;
        self.client = client;
        self.deadline.clear();
    }

    /// Ends the request it carries: no longer in flight. Idempotent.
    pub(super) fn release(&mut self) {
        if std::mem::take(&mut self.in_flight) {
            self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Puts it in the idle pool.
    pub(super) fn park(&mut self) {
        self.release();
        self.state = BackendState::Idle;
    }
}

impl Drop for BackendConn {
    fn drop(&mut self) {
        self.release();
        self.stats.conns.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A worker's connections: the client and backend slabs, and the clients to run again after the
/// current event.
#[derive(Default)]
pub(super) struct Conns {
    clients: Slab<ClientConn>,
    backends: Slab<BackendConn>,
    /// Clients to run again after the current event (their queued backend has room now).
    pub(super) wake: Vec<ClientKey>,
    /// The address a client reached as its PROXY header named it, by client key; kept only
    /// when headers are both read and sent, so an idle client costs no more for it.
    pub(super) proxied_dst: HashMap<usize, SocketAddr>,
}

impl Conns {
    pub(super) fn client(&self, k: ClientKey) -> Option<&ClientConn> {
        self.clients.get(k.0)
    }

    pub(super) fn client_mut(&mut self, k: ClientKey) -> Option<&mut ClientConn> {
        self.clients.get_mut(k.0)
    }

    pub(super) fn backend(&self, bk: BackendConnKey) -> Option<&BackendConn> {
        self.backends.get(bk.0)
    }

    pub(super) fn backend_mut(&mut self, bk: BackendConnKey) -> Option<&mut BackendConn> {
        self.backends.get_mut(bk.0)
    }

    /// Client `k`'s exchange, if it has one.
    pub(super) fn exchange(&self, k: ClientKey) -> Option<&Exchange> {
        self.clients.get(k.0).and_then(|c| c.ex.as_deref())
    }

    pub(super) fn exchange_mut(&mut self, k: ClientKey) -> Option<&mut Exchange> {
        self.clients.get_mut(k.0).and_then(|c| c.ex.as_deref_mut())
    }

    /// A client and its backend connection, borrowed together.
    pub(super) fn pair_mut(
        &mut self,
        k: ClientKey,
        bk: BackendConnKey,
    ) -> (&mut ClientConn, &mut BackendConn) {
        (&mut self.clients[k.0], &mut self.backends[bk.0])
    }

    pub(super) fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub(super) fn backend_count(&self) -> usize {
        self.backends.len()
    }

    pub(super) fn has_no_clients(&self) -> bool {
        self.clients.is_empty()
    }

    pub(super) fn clients(&self) -> impl Iterator<Item = (ClientKey, &ClientConn)> {
        self.clients.iter().map(|(k, c)| (ClientKey(k), c))
    }

    pub(super) fn backends(&self) -> impl Iterator<Item = (BackendConnKey, &BackendConn)> {
        self.backends.iter().map(|(bk, b)| (BackendConnKey(bk), b))
    }

    pub(super) fn backends_mut(&mut self) -> impl Iterator<Item = &mut BackendConn> {
        self.backends.iter_mut().map(|(_, b)| b)
    }

    /// The key the next [`Conns::insert_client`] gets, to register its socket under.
    pub(super) fn next_client_key(&self) -> ClientKey {
        ClientKey(self.clients.vacant_key())
    }

    pub(super) fn insert_client(&mut self, c: ClientConn) -> ClientKey {
        ClientKey(self.clients.insert(c))
    }

    pub(super) fn remove_client(&mut self, k: ClientKey) -> Option<ClientConn> {
        if !self.proxied_dst.is_empty() {
            self.proxied_dst.remove(&k.0);
        }
        self.clients.try_remove(k.0)
    }

    /// The key the next [`Conns::insert_backend`] gets.
    pub(super) fn next_backend_key(&self) -> BackendConnKey {
        BackendConnKey(self.backends.vacant_key())
    }

    pub(super) fn insert_backend(&mut self, b: BackendConn) -> BackendConnKey {
        BackendConnKey(self.backends.insert(b))
    }

    pub(super) fn remove_backend(&mut self, bk: BackendConnKey) -> Option<BackendConn> {
        self.backends.try_remove(bk.0)
    }

    /// Cuts back slabs much larger than their contents (to their last live entry: keys stay
    /// valid); true when memory was released.
    pub(super) fn trim(&mut self) -> bool {
        let mut released = false;
        if self.clients.capacity() > 4 * self.clients.len() + 1024 {
            self.clients.shrink_to_fit();
            released = true;
        }
        if self.backends.capacity() > 4 * self.backends.len() + 1024 {
            self.backends.shrink_to_fit();
            released = true;
        }
        released
    }
}

impl Index<ClientKey> for Conns {
    type Output = ClientConn;

    fn index(&self, k: ClientKey) -> &ClientConn {
        &self.clients[k.0]
    }
}

impl IndexMut<ClientKey> for Conns {
    fn index_mut(&mut self, k: ClientKey) -> &mut ClientConn {
        &mut self.clients[k.0]
    }
}

impl Index<BackendConnKey> for Conns {
    type Output = BackendConn;

    fn index(&self, bk: BackendConnKey) -> &BackendConn {
        &self.backends[bk.0]
    }
}

impl IndexMut<BackendConnKey> for Conns {
    fn index_mut(&mut self, bk: BackendConnKey) -> &mut BackendConn {
        &mut self.backends[bk.0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection_to_a_listener() -> (std::net::TcpListener, BackendStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener, BackendStream::Tcp(sock))
    }

    #[test]
    fn an_idle_client_costs_64_bytes_of_slab() {
        // The client port the PROXY protocol needs fits in padding; the address a header names
        // as reached lives apart (Conns::proxied_dst), so an idle client costs what it did.
        // mio adds a selector id to every socket in debug builds; the 64 bytes are a release
        // build's.
        let debug_extra = std::mem::size_of::<TcpStream>() - std::mem::size_of::<i32>();
        assert!(std::mem::size_of::<ClientConn>() <= 64 + debug_extra);
    }

    #[test]
    fn tokens_tell_clients_from_backend_connections() {
        assert_eq!(Owner::of(ClientKey(7).token()), Owner::Client(ClientKey(7)));
        assert_eq!(
            Owner::of(BackendConnKey(7).token()),
            Owner::Backend(BackendConnKey(7))
        );
    }

    #[test]
    fn a_backend_connection_counts_in_flight_only_while_bound_and_open_until_dropped() {
        let (_listener, sock) = connection_to_a_listener();
        let backend = Backend::new(1, "127.0.0.1:1".parse().unwrap(), 1);
        let stats = backend.stats.clone();
        let mut b = BackendConn::connecting(sock, &backend, TableIndex(0), ClientKey(3));
        assert_eq!((stats.conns(), stats.in_flight()), (1, 1));
        b.connected();
        b.release();
        b.release();
        assert_eq!((stats.conns(), stats.in_flight()), (1, 0), "released once");
        b.park();
        b.bind(ClientKey(4));
        assert_eq!(stats.in_flight(), 1);
        drop(b);
        assert_eq!(
            (stats.conns(), stats.in_flight()),
            (0, 0),
            "dropping a busy connection gives back both counts"
        );
    }
}
