//! The listening sockets: the proxy address bound once per worker with SO_REUSEPORT (so the kernel
//! spreads new connections over the workers), the admin address, and the sockets a live upgrade's
//! predecessor hands over as inherited descriptors (see [`crate::upgrade`]).
//!
//! An IPv6 proxy address is dual-stack: IPV6_V6ONLY is cleared whatever the system default
//! (`net.ipv6.bindv6only`), so `[::]:8080` takes IPv4 clients too, as IPv4-mapped addresses that
//! the workers turn back into plain IPv4 ones. One flag then serves both families, as it does
//! with nginx's `listen [::]:80 ipv6only=off` and HAProxy's `v4v6`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ReusePort;

/// Names the inherited descriptors in a live upgrade's successor: `proxy=3,4;admin=5`.
pub const ENV_FDS: &str = "SLUICE_UPGRADE_FDS";

/// Listen backlog asked for; the kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 65_535;

/// A TCP socket for `addr`'s family; dual-stack when it is IPv6.
fn stream_socket(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false)?;
    }
    Ok(sock)
}

/// A socket bound (not listening) to `addr` without SO_REUSEPORT: it fails with `AddrInUse` when
/// any process listens on `addr`. SO_REUSEADDR lets it bind past connections in TIME_WAIT.
fn bind_exclusive(addr: SocketAddr) -> io::Result<Socket> {
    let sock = stream_socket(addr)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// A listening socket that other sockets (other workers, another sluice process) may bind too.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = stream_socket(addr)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(LISTEN_BACKLOG)?;
    Ok(sock.into())
}

/// The listening sockets of one sluice process.
pub struct Listeners {
    /// One per worker, all bound to the proxy address with SO_REUSEPORT.
    pub proxy: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the proxy address once per worker (the first bind fixes a port 0), and the admin
    /// address. With [`ReusePort::Exclusive`], an address another process listens on already is
    /// refused: SO_REUSEPORT would otherwise let this process quietly take a share of its traffic.
    pub fn bind(
        listen: SocketAddr,
        reuse: ReusePort,
        workers: usize,
        admin: Option<SocketAddr>,
    ) -> Result<Listeners, String> {
        let proxy_err = |e: io::Error| {
            let hint = if e.kind() == io::ErrorKind::AddrInUse {
                "; another process listens there: choose another --listen port, or stop it \
                 (--reuse-port shared joins it on purpose)"
            } else {
                ""
            };
            format!("cannot listen on {listen}: {e}{hint}")
        };
        if reuse == ReusePort::Exclusive && listen.port() != 0 {
            // A socket without SO_REUSEPORT cannot bind where anyone listens with or without it.
            drop(bind_exclusive(listen).map_err(proxy_err)?);
        }
        let first = bind_reuseport(listen).map_err(proxy_err)?;
        let local = first.local_addr().map_err(proxy_err)?;
        let mut proxy = vec![first];
        for _ in 1..workers.max(1) {
            proxy.push(bind_reuseport(local).map_err(proxy_err)?);
        }
        let admin = match admin {
            Some(addr) => Some(TcpListener::bind(addr).map_err(|e| {
                let hint = if e.kind() == io::ErrorKind::AddrInUse {
                    "; choose another --admin address, or --admin off"
                } else {
                    ""
                };
                format!("cannot listen on admin address {addr}: {e}{hint}")
            })?),
            None => None,
        };
        Ok(Listeners { proxy, admin })
    }

    /// Duplicates of every socket (close-on-exec set), kept for a later hand-over.
    pub fn duplicate(&self) -> io::Result<Listeners> {
        Ok(Listeners {
            proxy: self
                .proxy
                .iter()
                .map(TcpListener::try_clone)
                .collect::<io::Result<_>>()?,
            admin: self
                .admin
                .as_ref()
                .map(TcpListener::try_clone)
                .transpose()?,
        })
    }

    pub(crate) fn describe(&self) -> String {
        let proxy: Vec<String> = self
            .proxy
            .iter()
            .map(|l| l.as_raw_fd().to_string())
            .collect();
        let mut text = format!("proxy={}", proxy.join(","));
        if let Some(admin) = &self.admin {
            text.push_str(&format!(";admin={}", admin.as_raw_fd()));
        }
        text
    }

    pub(crate) fn fds(&self) -> Vec<RawFd> {
        self.proxy
            .iter()
            .chain(self.admin.iter())
            .map(AsRawFd::as_raw_fd)
            .collect()
    }
}

/// The listeners a predecessor handed over, if this process was started by a live upgrade.
pub fn inherited() -> Result<Option<Listeners>, String> {
    let Ok(text) = std::env::var(ENV_FDS) else {
        return Ok(None);
    };
    std::env::remove_var(ENV_FDS);
    let bad = || format!("{ENV_FDS} is malformed: {text:?}");
    let fd = |s: &str| -> Result<TcpListener, String> {
        let n: RawFd = s.trim().parse().map_err(|_| bad())?;
        if n < 3 {
            return Err(bad());
        }
        // SAFETY: the predecessor passed this descriptor, open and listening, for us to own.
        let listener = unsafe { TcpListener::from_raw_fd(n) };
        listener
            .local_addr()
            .map_err(|e| format!("inherited descriptor {n} is not a socket: {e}"))?;
        set_cloexec(n, true);
        Ok(listener)
    };
    let mut out = Listeners {
        proxy: Vec::new(),
        admin: None,
    };
    for part in text.split(';') {
        match part.split_once('=') {
            Some(("proxy", list)) => {
                for item in list.split(',') {
                    out.proxy.push(fd(item)?);
                }
            }
            Some(("admin", item)) => out.admin = Some(fd(item)?),
            _ => return Err(bad()),
        }
    }
    if out.proxy.is_empty() {
        return Err(bad());
    }
    Ok(Some(out))
}

pub(crate) fn set_cloexec(fd: RawFd, on: bool) {
    // SAFETY: fcntl on a descriptor we hold; it is async-signal-safe, so also fine after fork.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            let flags = if on {
                flags | libc::FD_CLOEXEC
            } else {
                flags & !libc::FD_CLOEXEC
            };
            libc::fcntl(fd, libc::F_SETFD, flags);
        }
    }
}
