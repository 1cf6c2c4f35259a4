//! Flags for what sits around sluice: the PROXY protocol from an L4 balancer in front
//! (`--accept-proxy-protocol`, `--proxy-protocol-from`) and to the backends behind
//! (`--send-proxy-protocol`).
//!
//! `--accept-proxy-protocol` needs `--proxy-protocol-from`: there is no default range. Trusting
//! every peer would let any client name any address as its own, and a loopback default would
//! quietly refuse the balancer's connections in every real deployment (where it is another
//! machine); so the operator names the balancers, and `0.0.0.0/0,::/0` is there for those who
//! mean everyone.

use clap::Args;

use super::cidr::Cidr;
use super::{Mode, ProxyConfig};
use crate::proxy_protocol::Version;

/// The PROXY protocol flags.
#[derive(Args, Debug, Clone, Default)]
pub struct EdgeArgs {
    /// Connections from --proxy-protocol-from start with a PROXY protocol header (v1 or v2,
    /// detected), and the client it names is the client: for X-Forwarded-For, hashing and logs.
    /// A connection from such a peer without a header, or with a header from any other peer, is
    /// closed (counted in sluice_proxy_protocol_headers_total).
    #[arg(long)]
    pub accept_proxy_protocol: bool,

    /// The peers (L4 balancers) that send PROXY protocol headers, as address ranges: a comma list
    /// or the flag repeated, e.g. 10.0.0.0/8,2001:db8::/32. Required with --accept-proxy-protocol.
    #[arg(long, value_name = "CIDR[,CIDR...]", value_delimiter = ',')]
    pub proxy_protocol_from: Vec<Cidr>,

    /// Start every backend connection with a PROXY protocol header naming the client: v1 (text)
    /// or v2 (binary). In HTTP mode backend connections are then not pooled (one per request),
    /// since a pooled connection would carry one client's header for everyone's requests.
    #[arg(long, value_name = "v1|v2", value_parser = parse_version)]
    pub send_proxy_protocol: Option<Version>,
}

fn parse_version(text: &str) -> Result<Version, String> {
    match text {
        "v1" | "1" => Ok(Version::V1),
        "v2" | "2" => Ok(Version::V2),
        _ => Err(format!("expected v1 or v2, not {text:?}")),
    }
}

impl EdgeArgs {
    /// Puts the flags into `proxy`, checking that they go together.
    pub fn apply(&self, proxy: &mut ProxyConfig) -> Result<(), String> {
        proxy.proxy_protocol_from =
            match (self.accept_proxy_protocol, &self.proxy_protocol_from[..]) {
                (false, []) => None,
                (true, []) => {
                    return Err(
                        "--accept-proxy-protocol needs --proxy-protocol-from CIDR[,CIDR...]: \
                            the addresses of the balancers that send the header (there is no \
                            default; 0.0.0.0/0,::/0 trusts every peer to name its client)"
                            .into(),
                    )
                }
                (false, _) => {
                    return Err("--proxy-protocol-from needs --accept-proxy-protocol".into());
                }
                (true, from) => Some(from.to_vec()),
            };
        proxy.send_proxy_protocol = self.send_proxy_protocol;
        if proxy.send_proxy_protocol.is_some() && proxy.mode == Mode::Http {
            // A header belongs to one client's connection; a pooled backend connection would
            // carry one client's address for the next client's requests.
            proxy.pool_max_idle = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(edge: EdgeArgs, mode: Mode) -> Result<ProxyConfig, String> {
        let mut proxy = ProxyConfig {
            mode,
            ..ProxyConfig::default()
        };
        edge.apply(&mut proxy).map(|()| proxy)
    }

    #[test]
    fn accepting_needs_the_peers_it_trusts_and_they_need_accepting() {
        let only_accept = EdgeArgs {
            accept_proxy_protocol: true,
            ..EdgeArgs::default()
        };
        let e = apply(only_accept, Mode::Http).unwrap_err();
        assert!(e.contains("--proxy-protocol-from"), "{e}");
        let only_from = EdgeArgs {
            proxy_protocol_from: vec!["10.0.0.0/8".parse().unwrap()],
            ..EdgeArgs::default()
        };
        assert!(apply(only_from, Mode::Http).is_err());
        let both = EdgeArgs {
            accept_proxy_protocol: true,
            proxy_protocol_from: vec!["10.0.0.0/8".parse().unwrap()],
            ..EdgeArgs::default()
        };
        let cfg = apply(both, Mode::Tcp).unwrap();
        assert_eq!(cfg.proxy_protocol_from.map(|l| l.len()), Some(1));
        assert_eq!(
            apply(EdgeArgs::default(), Mode::Http)
                .unwrap()
                .proxy_protocol_from,
            None
        );
    }

    #[test]
    fn sending_in_http_mode_turns_pooling_off_and_tcp_mode_keeps_it() {
        let send = EdgeArgs {
            send_proxy_protocol: Some(Version::V2),
            ..EdgeArgs::default()
        };
        let http = apply(send.clone(), Mode::Http).unwrap();
        assert_eq!(
            (http.send_proxy_protocol, http.pool_max_idle),
            (Some(Version::V2), 0)
        );
        let tcp = apply(send, Mode::Tcp).unwrap();
        assert_ne!(tcp.pool_max_idle, 0);
        assert_eq!(parse_version("v1"), Ok(Version::V1));
        assert!(parse_version("v3").is_err());
    }
}
