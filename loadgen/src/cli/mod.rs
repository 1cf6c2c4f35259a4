//! Command-line front ends of the subcommands: argument structs, parsers for durations and
//! ranges, and the mapping of errors to exit codes. The work itself is in the library.

pub mod challenge;
pub mod hold;
pub mod http;
pub mod sim;

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Exit code for a run that failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for unusable arguments (clap uses it too).
pub const EXIT_USAGE: i32 = 2;

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub exit_code: i32,
}

impl CliError {
    pub fn usage(message: impl Display) -> Self {
        CliError {
            message: message.to_string(),
            exit_code: EXIT_USAGE,
        }
    }

    pub fn failure(message: impl Display) -> Self {
        CliError {
            message: message.to_string(),
            exit_code: EXIT_FAILURE,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            CliError::usage(e)
        } else {
            CliError::failure(e)
        }
    }
}

pub type CliResult = Result<(), CliError>;

/// `10` (seconds), `2.5s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 10, 2.5s, 500ms or 2m"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "invalid duration {text:?}: must be zero or positive"
        ));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Source addresses from `127.0.0.2-127.0.0.40` (inclusive) or a single address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList(pub Vec<IpAddr>);

pub fn parse_ip_list(text: &str) -> Result<IpList, String> {
    loadgen::net::parse_ip_range(text)
        .map(IpList)
        .map_err(|e| e.to_string())
}

/// `host:port` (or `http://host:port/...`, keeping host and port) to an address.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let rest = text.strip_prefix("http://").unwrap_or(text);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()
        .map_err(|e| format!("invalid address {text:?}: {e} (expected host:port)"))?
        .next()
        .ok_or_else(|| format!("invalid address {text:?}: no address"))
}

/// Prints an optional JSON line last, after the human report.
pub fn print_report(text: &str, json: Option<String>) {
    print!("{text}");
    if let Some(json) = json {
        println!("{json}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_plain_seconds_and_suffixes() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn addresses_accept_urls_and_host_port() {
        let want: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(parse_addr("127.0.0.1:8080"), Ok(want));
        assert_eq!(parse_addr("http://127.0.0.1:8080/x"), Ok(want));
        assert!(parse_addr("127.0.0.1").is_err());
    }
}
