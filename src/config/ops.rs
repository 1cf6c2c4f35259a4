//! Flags for operating sluice at the edge: the access log (`--access-log`,
//! `--access-log-format`) and per-client limits (`--max-conns-per-client`,
//! `--rate-limit-per-client`). All are off by default, and off they cost the request path one
//! branch on an `Option`.

use clap::Args;

use super::ProxyConfig;
use crate::access_log::{AccessLogConfig, LogFormat, LogTarget};
use crate::limits::{ClientLimits, RateLimit};

#[derive(Args, Debug, Clone, Default)]
pub struct OpsArgs {
    /// Write an access log, one line per HTTP request (per connection in TCP mode), to PATH
    /// (appended to; SIGUSR1 or `sluice ctl log reopen` reopens it after logrotate) or stdout.
    /// Lines the log cannot keep up with are dropped and counted, never waited for.
    #[arg(long, value_name = "PATH|stdout")]
    pub access_log: Option<String>,

    /// How access-log lines look: one JSON object each, or Apache/nginx combined.
    #[arg(long, value_enum, default_value = "json", value_name = "json|combined")]
    pub access_log_format: LogFormat,

    /// Most open connections from one client (an IPv4 address, an IPv6 /64; after the PROXY
    /// protocol); more are closed at accept and counted. Off by default.
    #[arg(long, value_name = "N")]
    pub max_conns_per_client: Option<u32>,

    /// Requests per second (or per minute with /m) from one client, with a burst: e.g.
    /// 100/s,burst=200. Beyond it HTTP mode answers 429 with Retry-After and TCP mode refuses
    /// the connection. Off by default.
    #[arg(long, value_name = "R[/s|/m][,burst=B]")]
    pub rate_limit_per_client: Option<String>,
}

impl OpsArgs {
    /// Puts the flags into `proxy`.
    pub fn apply(&self, proxy: &mut ProxyConfig) -> Result<(), String> {
        proxy.access_log = match &self.access_log {
            None => None,
            Some(text) => Some(AccessLogConfig {
                target: LogTarget::parse(text)?,
                format: self.access_log_format,
            }),
        };
        let rate = match &self.rate_limit_per_client {
            None => None,
            Some(text) => {
                Some(RateLimit::parse(text).map_err(|e| format!("--rate-limit-per-client: {e}"))?)
            }
        };
        if self.max_conns_per_client == Some(0) {
            return Err("--max-conns-per-client must be at least 1".into());
        }
        proxy.client_limits =
            (self.max_conns_per_client.is_some() || rate.is_some()).then_some(ClientLimits {
                max_conns: self.max_conns_per_client,
                rate,
                hash_seed: None,
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_off_leave_nothing_on_and_bad_values_are_refused() {
        let mut cfg = ProxyConfig::default();
        OpsArgs::default().apply(&mut cfg).unwrap();
        assert!(cfg.access_log.is_none() && cfg.client_limits.is_none());
        let args = OpsArgs {
            access_log: Some("stdout".into()),
            max_conns_per_client: Some(4),
            rate_limit_per_client: Some("5/s,burst=10".into()),
            ..OpsArgs::default()
        };
        args.apply(&mut cfg).unwrap();
        assert_eq!(cfg.access_log.clone().unwrap().target, LogTarget::Stdout);
        let limits = cfg.client_limits.unwrap();
        assert_eq!(
            (limits.max_conns, limits.rate.map(|r| r.burst)),
            (Some(4), Some(10))
        );
        let zero = OpsArgs {
            max_conns_per_client: Some(0),
            ..OpsArgs::default()
        };
        assert!(zero.apply(&mut cfg).is_err());
        let bad = OpsArgs {
            rate_limit_per_client: Some("fast".into()),
            ..OpsArgs::default()
        };
        assert!(bad
            .apply(&mut cfg)
            .unwrap_err()
            .contains("--rate-limit-per-client"));
    }
}
