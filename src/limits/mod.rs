//! Per-client limits: `--max-conns-per-client N` (connections from one client beyond N are
//! closed at accept) and `--rate-limit-per-client R[/s|/m][,burst=B]` (a token bucket per client;
//! HTTP mode answers 429 with `Retry-After`, TCP mode refuses the connection). A client is its
//! address after the PROXY protocol; IPv6 clients by their /64, since one host commonly holds a
//! whole /64.
//!
//! The state is one fixed table shared by all workers ([`ClientTable`]), updated with atomics
//! only. [`TopClients`] is the control thread's view of it for the dashboard.

mod table;
mod top;

pub(crate) use table::ClientTable;
pub(crate) use top::{TopClient, TopClients};

/// The table's buckets (a power of two): 2 MiB, and a client shares its bucket with another
/// only when tens of thousands are active at once.
pub const DEFAULT_CLIENT_BUCKETS: usize = 1 << 16;

/// A token bucket's rate and depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Time one token takes to come back, in µs (1/R).
    pub interval_us: u64,
    /// Requests admitted at once from a full bucket.
    pub burst: u32,
}

impl RateLimit {
    /// `R`, `R/s` or `R/m` (requests per second or minute, R may have a fraction), optionally
    /// followed by `,burst=B`; the burst is R (one second's worth, at least 1) when not given.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let (rate, rest) = match text.split_once(',') {
            Some((r, rest)) => (r.trim(), Some(rest.trim())),
            None => (text.trim(), None),
        };
        let (number, per_s) = match rate.split_once('/') {
            None => (rate, 1.0),
            Some((n, "s")) => (n, 1.0),
            Some((n, "m")) => (n, 60.0),
            Some((_, unit)) => {
                return Err(format!("rate unit must be /s or /m, not /{unit}"));
            }
        };
        let r: f64 = number
            .parse()
            .ok()
            .filter(|r: &f64| r.is_finite() && *r > 0.0)
            .ok_or_else(|| format!("rate must be a positive number, not {number:?}"))?;
        let per_s_rate = r / per_s;
        let interval_us = (1e6 / per_s_rate).round();
        if !(1.0..=3.6e9).contains(&interval_us) {
            return Err("rate must be between 1 per hour and 1,000,000 per second".into());
        }
        let burst = match rest {
            None => per_s_rate.ceil().max(1.0) as u32,
            Some(b) => {
                let n = b
                    .strip_prefix("burst=")
                    .ok_or_else(|| format!("expected burst=B after the rate, not {b:?}"))?;
                n.parse::<u32>()
                    .ok()
                    .filter(|&n| (1..=1_000_000).contains(&n))
                    .ok_or_else(|| format!("burst must be 1-1000000, not {n:?}"))?
            }
        };
        Ok(RateLimit {
            interval_us: interval_us as u64,
            burst,
        })
    }
}

/// `--max-conns-per-client` and `--rate-limit-per-client`; at least one is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_conns: Option<u32>,
    pub rate: Option<RateLimit>,
    /// The seed of the table's address hash: `None` (what the flags give) draws one at start, so
    /// that nobody can choose addresses that share a bucket with someone else's; tests fix it.
    pub hash_seed: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_bursts() {
        assert_eq!(
            RateLimit::parse("100/s,burst=20"),
            Ok(RateLimit {
                interval_us: 10_000,
                burst: 20
            })
        );
        assert_eq!(
            RateLimit::parse("30/m"),
            Ok(RateLimit {
                interval_us: 2_000_000,
                burst: 1
            })
        );
        assert_eq!(RateLimit::parse("2.5").map(|r| r.burst), Ok(3));
        for bad in ["", "0", "-1/s", "5/h", "5,burst=0", "5,bust=3", "abc"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }
}
