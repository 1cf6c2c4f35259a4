//! Where a backend listens: a TCP address (IPv4 or IPv6), or a Unix-domain stream socket named by
//! its path. The text form is what flags, the admin API, the state file and the cluster store
//! use: `10.0.0.1:8080`, `[::1]:8080`, or `unix:/run/app.sock`. Strategies that place by backend
//! (`maglev`, `ip-hash`, `sticky`) hash this text, so a unix backend is placed by its path.

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
}

impl BackendAddr {
    /// The socket path of a unix backend.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            BackendAddr::Unix(path) => Some(path),
            BackendAddr::Ip(_) => None,
        }
    }

    /// Reads the text form without resolving names: `unix:/path`, or an IP address and port.
    /// For text that was written by sluice (state file, cluster store).
    pub fn parse_literal(text: &str) -> Result<BackendAddr, String> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            return unix(path);
        }
        text.parse::<SocketAddr>()
            .map(BackendAddr::Ip)
            .map_err(|_| format!("bad address {text:?}"))
    }
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

/// Parses a backend address as flags and the API take it: `unix:/path`, or `host:port` (a host
/// name is resolved once, here). Port 0 is refused.
pub fn parse_backend_addr(text: &str) -> Result<BackendAddr, String> {
    if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
        return unix(path);
    }
    let addr = super::parse_addr(text)?;
    if addr.port() == 0 {
        return Err(format!(
            "bad address {text:?}: a backend cannot listen on port 0"
        ));
    }
    Ok(BackendAddr::Ip(addr))
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Ip(addr) => addr.fmt(f),
            BackendAddr::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
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
        assert!(
            BackendAddr::parse_literal("localhost:80").is_err(),
            "no lookups"
        );
    }
}
