//! One immutable version of the backend set and the strategy that routes over it.

use super::{Backend, BackendId};
use crate::strategy::{StrategyKind, StrategyParams};

/// One version of the backend set and the strategy that routes over it.
#[derive(Debug)]
pub struct BackendTable {
    pub version: u64,
    /// The configuration revision it was built from (in a cluster, an etcd revision): instances
    /// that installed the same revision route by the same configuration.
    pub revision: u64,
    pub backends: Vec<Backend>,
    pub strategy: StrategyKind,
    pub params: StrategyParams,
    /// Whether workers keep each backend's Peak-EWMA latency up to date: only strategies that
    /// read it (`least-time`, `p2c`, and `adaptive`, which may switch to them) pay for the shared
    /// writes on every response.
    pub latency_aware: bool,
    /// Indices of eligible backends, computed once per version so a pick never filters.
    pub eligible: Vec<usize>,
}

impl BackendTable {
    pub fn new(version: u64, backends: Vec<Backend>, strategy: StrategyKind) -> BackendTable {
        let eligible = (0..backends.len())
            .filter(|&i| backends[i].is_eligible())
            .collect();
        BackendTable {
            version,
            revision: 0,
            backends,
            strategy,
            params: StrategyParams::default(),
            latency_aware: true,
            eligible,
        }
    }

    /// Position of backend `id` in this version.
    pub fn position(&self, id: BackendId) -> Option<usize> {
        self.backends.iter().position(|b| b.id == id)
    }

    /// Position of backend `id`, trying `hint` first.
    pub fn position_hinted(&self, id: BackendId, hint: usize) -> Option<usize> {
        match self.backends.get(hint) {
            Some(b) if b.id == id => Some(hint),
            _ => self.position(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn eligible_excludes_disabled_unhealthy_and_zero_weight() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut b = vec![
            Backend::new(1, addr, 1),
            Backend::new(2, addr, 1),
            Backend::new(3, addr, 0),
            Backend::new(4, addr, 2),
        ];
        b[0].enabled = false;
        b[1].healthy = false;
        let t = BackendTable::new(1, b, StrategyKind::RoundRobin);
        assert_eq!(t.eligible, vec![3]);
        assert_eq!(t.position_hinted(4, 0), Some(3));
        assert_eq!(t.position_hinted(4, 3), Some(3));
        assert_eq!(t.position(9), None);
    }
}
