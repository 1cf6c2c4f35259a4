//! Where a backend listens: a TCP address (IPv4 or IPv6), a Unix-domain stream socket named by
//! its path, or a DNS name and port. The text form is what flags, the admin API, the state file
//! and the cluster store use: `10.0.0.1:8080`, `[::1]:8080`, `unix:/run/app.sock`, or
//! `app.internal:8080`. Strategies that place by backend (`maglev`, `ip-hash`, `sticky`) hash this
//! text, so a unix backend is placed by its path.
//!
//! A name is configuration only: the control thread has it looked up (`crate::resolve`) and
//! routes to one member per address in the answer, each an [`BackendAddr::Ip`]; no table a worker
//! routes by ever holds a name.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The prefix that marks a Unix-domain socket backend.
pub const UNIX_PREFIX: &str = "unix:";
/// The longest socket path Linux takes (`sun_path` is 108 bytes with its terminating NUL).
pub(crate) const MAX_UNIX_PATH_BYTES: usize = 107;

/// A backend's address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendAddr {
    /// A TCP address, IPv4 or IPv6.
    Ip(SocketAddr),
    /// A Unix-domain stream socket.
    Unix(PathBuf),
    /// A DNS name (lower case, without a trailing dot) and a port: stands for every address the
    /// name resolves to.
    Name { host: String, port: u16 },
}

impl BackendAddr {
    /// The socket path of a unix backend.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            BackendAddr::Unix(path) => Some(path),
            BackendAddr::Ip(_) | BackendAddr::Name { .. } => None,
        }
    }

    /// Whether this is a DNS name that stands for the addresses it resolves to.
    pub fn is_name(&self) -> bool {
        matches!(self, BackendAddr::Name { .. })
    }

    /// Reads the text form without looking any name up: `unix:/path`, an IP address and port,
    /// or a DNS name and port. For text that was written by sluice (state file, cluster store).
    pub fn parse_literal(text: &str) -> Result<BackendAddr, String> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            return unix(path);
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(BackendAddr::Ip(addr));
        }
        name(text)
    }
}

/// `host:port` where host is a DNS name (RFC 1123 section 2.1 labels; `_` allowed, as service
/// names use it). Lower-cased, so that one name is one backend however it is spelled.
fn name(text: &str) -> Result<BackendAddr, String> {
    let bad = || format!("bad address {text:?} (expected host:port, for example 127.0.0.1:8081)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(BackendAddr::Name {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// A unix backend's path: absolute, and short enough for `sockaddr_un`.
fn unix(path: &str) -> Result<BackendAddr, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "bad address \"unix:{path}\": the socket path must be absolute (unix:/run/app.sock)"
        ));
    }
    if path.len() > MAX_UNIX_PATH_BYTES || path.contains('\0') {
        return Err(format!(
            "bad address \"unix:{path}\": a socket path has at most {MAX_UNIX_PATH_BYTES} bytes"
        ));
    }
    Ok(BackendAddr::Unix(PathBuf::from(path)))
}

/// Parses a backend address as flags and the API take it: `unix:/path`, `ip:port`, or
/// `name:port` (looked up later, by the control thread). Port 0 is refused.
pub fn parse_backend_addr(text: &str) -> Result<BackendAddr, String> {
    let addr = BackendAddr::parse_literal(text)?;
    if addr_port(&addr) == Some(0) {
        return Err(format!(
            "bad address {text:?}: a backend cannot listen on port 0"
        ));
    }
    Ok(addr)
}

fn addr_port(addr: &BackendAddr) -> Option<u16> {
    match addr {
        BackendAddr::Ip(a) => Some(a.port()),
        BackendAddr::Name { port, .. } => Some(*port),
        BackendAddr::Unix(_) => None,
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Ip(addr) => addr.fmt(f),
            BackendAddr::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
            BackendAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// The literal form ([`BackendAddr::parse_literal`]): no name is looked up.
impl std::str::FromStr for BackendAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<BackendAddr, String> {
        BackendAddr::parse_literal(text)
    }
}

impl From<SocketAddr> for BackendAddr {
    fn from(addr: SocketAddr) -> BackendAddr {
        BackendAddr::Ip(addr)
    }
}

impl serde::Serialize for BackendAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BackendAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BackendAddr, D::Error> {
        let text = String::deserialize(d)?;
        BackendAddr::parse_literal(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_parse_and_print_back() {
        for text in ["127.0.0.1:8080", "[::1]:80", "unix:/run/app.sock"] {
            let addr = parse_backend_addr(text).unwrap();
            assert_eq!(addr.to_string(), text);
            assert_eq!(BackendAddr::parse_literal(text).unwrap(), addr);
            let json = serde_json::to_string(&addr).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<BackendAddr>(&json).unwrap(), addr);
        }
        assert_eq!(
            parse_backend_addr("unix:/a").unwrap().unix_path(),
            Some(Path::new("/a"))
        );
    }

    #[test]
    fn bad_unix_paths_and_port_zero_are_refused() {
        let long = format!("unix:/{}", "x".repeat(MAX_UNIX_PATH_BYTES));
        for bad in ["unix:relative.sock", "unix:", &long, "127.0.0.1:0"] {
            assert!(parse_backend_addr(bad).is_err(), "{bad}");
        }
        assert!(parse_backend_addr("app.internal:0").is_err());
    }

    #[test]
    fn names_are_kept_as_names_lower_cased_and_checked() {
        let addr = parse_backend_addr("App.Internal.:8080").unwrap();
        assert_eq!(
            addr,
            BackendAddr::Name {
                host: "app.internal".into(),
                port: 8080
            }
        );
        assert!(addr.is_name());
        assert_eq!(addr.to_string(), "app.internal:8080");
        assert_eq!(
            BackendAddr::parse_literal("app.internal:8080").unwrap(),
            addr
        );
        for bad in [
            "app.internal",
            "app..internal:80",
            "-app:80",
            "a b:80",
            "app:http",
            ":80",
        ] {
            let e = parse_backend_addr(bad).unwrap_err();
            assert!(e.contains("expected host:port"), "{bad}: {e}");
        }
    }
}
