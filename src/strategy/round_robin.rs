//! Round robin: every candidate in turn, ignoring weights and load.

use super::{PickContext, Strategy};
use crate::backend::Backend;

pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// Starts at `offset`, so that workers do not all begin with the same backend.
    pub fn new(offset: usize) -> RoundRobin {
        RoundRobin { next: offset }
    }
}

impl Strategy for RoundRobin {
    fn pick(
        &mut self,
        _backends: &[Backend],
        candidates: &[usize],
        _ctx: &PickContext<'_>,
    ) -> usize {
        let pick = candidates[self.next % candidates.len()];
        self.next = self.next.wrapping_add(1);
        pick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::test_support::{backends, ctx};

    #[test]
    fn round_robin_visits_candidates_in_order() {
        let b = backends(&[1, 5, 1]);
        let mut rr = RoundRobin::new(0);
        let seq: Vec<usize> = (0..7).map(|_| rr.pick(&b, &[0, 1, 2], &ctx())).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn round_robin_only_picks_candidates() {
        let b = backends(&[1, 1, 1, 1]);
        let mut rr = RoundRobin::new(3);
        let seq: Vec<usize> = (0..4).map(|_| rr.pick(&b, &[1, 3], &ctx())).collect();
        assert_eq!(seq, vec![3, 1, 3, 1]);
    }
}
