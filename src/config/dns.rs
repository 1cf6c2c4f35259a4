//! Flags for backends given by DNS name (`--backend app.internal:8080`): where names are looked
//! up (`--dns-server`, or the system's resolver), how often (`--resolve-interval`, or the
//! answer's TTL when sluice asks a DNS server itself), and whether a `--backend` name that does
//! not resolve at start stops start-up (`--allow-unresolved`).

use std::net::SocketAddr;

use clap::Args;

use super::DurationArg;

/// Default `--resolve-interval`.
const DEFAULT_RESOLVE_INTERVAL: &str = "30s";
/// The port of `--dns-server` when none is given.
const DNS_PORT: u16 = 53;

/// The DNS flags.
#[derive(Args, Debug, Clone)]
pub struct DnsArgs {
    /// Look backend names up by asking this DNS server directly (IP or IP:PORT, port 53 by
    /// default), over UDP; a name is then looked up again when its answer's TTL runs out, and at
    /// least every --resolve-interval. Without it, names go through the system's resolver
    /// (getaddrinfo: /etc/hosts, then the DNS servers of /etc/resolv.conf), which tells no TTL.
    #[arg(long, value_name = "ADDR", value_parser = parse_dns_server)]
    pub dns_server: Option<SocketAddr>,

    /// How often a backend given by name is looked up again (the longest wait with --dns-server,
    /// where a shorter TTL wins; at least 1s).
    #[arg(long, default_value = DEFAULT_RESOLVE_INTERVAL, value_name = "DURATION")]
    pub resolve_interval: DurationArg,

    /// Start even when a --backend name does not resolve: it serves no traffic until it does
    /// (HAProxy's init-addr none). Without it such a name stops start-up with "did not resolve".
    #[arg(long)]
    pub allow_unresolved: bool,
}

fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .map_err(|_| format!("expected an IP address, optionally with :PORT, not {text:?}"))
}

/// Where and how often backend names are looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolveConfig {
    /// Ask this DNS server directly; `None` uses the system's resolver.
    pub dns_server: Option<SocketAddr>,
    pub interval_ms: u64,
    /// A `--backend` name that does not resolve at start does not stop start-up.
    pub allow_unresolved: bool,
}

impl Default for ResolveConfig {
    fn default() -> ResolveConfig {
        ResolveConfig {
            dns_server: None,
            interval_ms: super::duration::ms_of(DEFAULT_RESOLVE_INTERVAL),
            allow_unresolved: false,
        }
    }
}

impl DnsArgs {
    pub fn config(&self) -> ResolveConfig {
        ResolveConfig {
            dns_server: self.dns_server,
            interval_ms: self.resolve_interval.ms(),
            allow_unresolved: self.allow_unresolved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_server_is_an_ip_with_port_53_unless_given() {
        assert_eq!(
            parse_dns_server("10.0.0.2"),
            Ok(SocketAddr::from(([10, 0, 0, 2], 53)))
        );
        assert_eq!(
            parse_dns_server("127.0.0.1:5353"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 5353)))
        );
        assert!(parse_dns_server("dns.example").is_err());
        assert_eq!(ResolveConfig::default().interval_ms, 30_000);
    }
}
