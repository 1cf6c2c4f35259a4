//! The busiest clients, for the dashboard: once a second the control thread reads every bucket of
//! the [`ClientTable`] and keeps the few with the most requests and the most refusals in that
//! second. It reads only atomics the workers write anyway, so the workers pay nothing for it; the
//! scan's cost and memory are fixed by the table's size (two counters a bucket kept from the last
//! scan), not by the number of clients.

use std::sync::atomic::Ordering;

use super::table::key_text;
use super::ClientTable;

/// Clients shown in each list.
pub(crate) const TOP_K: usize = 10;

/// One client in a top list.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub(crate) struct TopClient {
    /// The address (an IPv6 client's /64).
    pub client: String,
    /// Requests (TCP mode: connections) in the last second.
    pub requests_per_s: u64,
    /// Refusals (connection cap and rate) in the last second.
    pub refusals_per_s: u64,
    /// Connections open now.
    pub connections: u32,
}

/// The last scan's result and the counts it started from.
#[derive(Default)]
pub(crate) struct TopClients {
    last_requests: Vec<u32>,
    last_refused: Vec<u32>,
    pub by_requests: Vec<TopClient>,
    pub by_refusals: Vec<TopClient>,
}

impl TopClients {
    /// Reads the table and replaces the lists with the last interval's busiest clients.
    pub(crate) fn scan(&mut self, table: &ClientTable) {
        let buckets = table.buckets();
        self.last_requests.resize(buckets.len(), 0);
        self.last_refused.resize(buckets.len(), 0);
        let mut by_requests: Vec<Scored> = Vec::with_capacity(TOP_K + 1);
        let mut by_refusals: Vec<Scored> = Vec::with_capacity(TOP_K + 1);
        for (i, b) in buckets.iter().enumerate() {
            let requests = b.requests.load(Ordering::Relaxed);
            let refused = b.refused.load(Ordering::Relaxed);
            let dr = requests.wrapping_sub(self.last_requests[i]);
            let dx = refused.wrapping_sub(self.last_refused[i]);
            self.last_requests[i] = requests;
            self.last_refused[i] = refused;
            let (dr, dx) = (u64::from(dr), u64::from(dx));
            if dr > 0 {
                keep_top(&mut by_requests, (dr, i, dr, dx));
            }
            if dx > 0 {
                keep_top(&mut by_refusals, (dx, i, dr, dx));
            }
        }
        let describe = |list: &[Scored]| -> Vec<TopClient> {
            list.iter()
                .map(|&(_, i, dr, dx)| {
                    let b = &buckets[i];
                    TopClient {
                        client: key_text(b.key.load(Ordering::Relaxed)),
                        requests_per_s: dr,
                        refusals_per_s: dx,
                        connections: b.conns.load(Ordering::Relaxed),
                    }
                })
                .collect()
        };
        self.by_requests = describe(&by_requests);
        self.by_refusals = describe(&by_refusals);
    }
}

/// A bucket's score, index, requests and refusals in the interval.
type Scored = (u64, usize, u64, u64);

/// Keeps `list` the [`TOP_K`] largest, largest first.
fn keep_top(list: &mut Vec<Scored>, item: Scored) {
    if list.len() == TOP_K && list.last().is_some_and(|l| l.0 >= item.0) {
        return;
    }
    let at = list.partition_point(|l| l.0 >= item.0);
    list.insert(at, item);
    list.truncate(TOP_K);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{ClientLimits, RateLimit};
    use std::net::IpAddr;

    #[test]
    fn the_busiest_clients_of_the_last_interval_come_first() {
        let limits = ClientLimits {
            max_conns: None,
            rate: Some(RateLimit::parse("1/s,burst=1").unwrap()),
            hash_seed: Some(7),
        };
        let t = ClientTable::new(limits, 1 << 12);
        let mut top = TopClients::default();
        let ip = |i: u32| IpAddr::V4((0x0a00_0000 + i).into());
        for i in 0..20u32 {
            for _ in 0..=i {
                let _ = t.admit(ip(i), 1_000_000);
            }
        }
        top.scan(&t);
        assert_eq!(top.by_requests.len(), TOP_K);
        assert_eq!(top.by_requests[0].client, "10.0.0.19");
        assert_eq!(top.by_requests[0].requests_per_s, 20);
        assert_eq!(top.by_refusals[0].refusals_per_s, 19);
        top.scan(&t);
        assert!(
            top.by_requests.is_empty(),
            "nothing new in the next interval"
        );
    }
}
