//! Socket plumbing shared by the generator, the holder and the simulator: readiness helpers,
//! listeners with a deep backlog, non-blocking connects from a chosen source address, address
//! and port ranges, and the open-file limit.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Backlog for every listener loadgen opens (the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// A non-blocking listener with `SO_REUSEADDR` and [`LISTEN_BACKLOG`]. Port 0 picks a free port.
pub fn listen(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Starts a non-blocking connect to `dst`, bound to `src` when given. Completion shows as a
/// writable event; check it with [`connect_result`].
///
/// With a source address the socket sets `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks the
/// source port at connect time per destination instead of reserving one per address at bind
/// time: that is what lets each source address carry ~28k connections to every destination.
pub fn connect_from(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = src {
        set_bind_address_no_port(&socket);
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || would_block(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

#[cfg(target_os = "linux")]
fn set_bind_address_no_port(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: valid fd, and the option value is a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::debug!("IP_BIND_ADDRESS_NO_PORT: {}", io::Error::last_os_error());
    }
}

#[cfg(not(target_os = "linux"))]
fn set_bind_address_no_port(_socket: &Socket) {}

/// After a writable event on a connecting stream: `Ok(true)` connected, `Ok(false)` still in
/// progress, `Err` the connect failed.
pub fn connect_result(stream: &mio::net::TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// An error in a range argument, with the text that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError(pub String);

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RangeError {}

/// Parses `A-B` as IPv4 addresses `A..=B` (inclusive: `127.0.0.2-127.0.0.40` is 39 addresses),
/// or a single address.
pub fn parse_ip_range(text: &str) -> Result<Vec<IpAddr>, RangeError> {
    let bad = |why: &str| RangeError(format!("invalid address range {text:?}: {why}"));
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (text.trim(), text.trim()),
    };
    let a: Ipv4Addr = a
        .parse()
        .map_err(|_| bad("expected IPv4 addresses like 127.0.0.2-127.0.0.40"))?;
    let b: Ipv4Addr = b
        .parse()
        .map_err(|_| bad("expected IPv4 addresses like 127.0.0.2-127.0.0.40"))?;
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a {
        return Err(bad("the range ends before it starts"));
    }
    if b - a >= 1 << 16 {
        return Err(bad("more than 65536 addresses"));
    }
    Ok((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect())
}

/// Parses `A-B` as the half-open port range `[A, B)`, as the challenge writes its ranges:
/// `4000-4010` is the ten ports 4000..=4009. A single port `A` means just `A`.
pub fn parse_port_range(text: &str) -> Result<Vec<u16>, RangeError> {
    let bad = |why: &str| RangeError(format!("invalid port range {text:?}: {why}"));
    let parse = |s: &str| {
        s.trim()
            .parse::<u16>()
            .map_err(|_| bad("expected ports like 4000-4010 (4010 excluded)"))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if b <= a {
                return Err(bad(
                    "empty range: the end is excluded, so 4000-4010 is 10 ports",
                ));
            }
            Ok((a..b).collect())
        }
        None => Ok(vec![parse(text)?]),
    }
}

/// Raises the soft open-file limit to the hard limit and returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// True when stdout is a terminal (progress lines are only printed then).
pub fn stdout_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDOUT_FILENO) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges_are_inclusive() {
        let ips = parse_ip_range("127.0.0.2-127.0.0.40").unwrap();
        assert_eq!(ips.len(), 39);
        assert_eq!(ips[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(parse_ip_range("127.0.0.9").unwrap().len(), 1);
        assert!(parse_ip_range("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_ip_range("nope").is_err());
    }

    #[test]
    fn port_ranges_are_half_open() {
        assert_eq!(
            parse_port_range("4000-4010").unwrap(),
            (4000..4010).collect::<Vec<_>>()
        );
        assert_eq!(parse_port_range("8080").unwrap(), vec![8080]);
        assert!(parse_port_range("4000-4000").is_err());
        assert!(parse_port_range("4000-70000").is_err());
    }
}
