//! How likely an attempt to one backend is to succeed, as sluice believes it: a Beta(α, β)
//! posterior over "an attempt succeeds", starting from the uniform Beta(1, 1), with both counts
//! decaying with half-life [`SUCCESS_HALF_LIFE_MS`] so that a backend that changes is re-learned
//! (a discounted Thompson-sampling bandit; Raj and Kalyani, "Taming non-stationary bandits",
//! 2017). [`crate::backend::learn`] keeps one per backend, written by every worker without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

pub const SUCCESS_HALF_LIFE_MS: f64 = 60_000.0;

fn pack2(a: f32, b: f32) -> u64 {
    (u64::from(a.to_bits()) << 32) | u64::from(b.to_bits())
}

fn unpack2(v: u64) -> (f32, f32) {
    (f32::from_bits((v >> 32) as u32), f32::from_bits(v as u32))
}

/// The decaying success and failure counts of one backend.
#[derive(Debug)]
pub struct Posterior {
    /// (α, β) as two f32, excluding the Beta(1, 1) prior.
    counts: AtomicU64,
    /// When the counts were last decayed.
    stamp_ms: AtomicU64,
}

impl Default for Posterior {
    fn default() -> Self {
        Posterior {
            counts: AtomicU64::new(pack2(0.0, 0.0)),
            stamp_ms: AtomicU64::new(0),
        }
    }
}

impl Posterior {
    /// Counts an attempt that succeeded or failed at `now_ms`, after decaying what came before.
    pub fn observe(&self, success: bool, now_ms: u64) {
        let last = self.stamp_ms.swap(now_ms, Ordering::Relaxed);
        let elapsed_ms = now_ms.saturating_sub(last) as f64;
        let keep = 0.5f64.powf(elapsed_ms / SUCCESS_HALF_LIFE_MS) as f32;
        let _ = self
            .counts
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                let (a, b) = unpack2(v);
                let (a, b) = (a * keep, b * keep);
                Some(if success {
                    pack2(a + 1.0, b)
                } else {
                    pack2(a, b + 1.0)
                })
            });
    }

    /// (α, β) including the uniform prior.
    pub fn beta(&self) -> (f64, f64) {
        let (a, b) = unpack2(self.counts.load(Ordering::Relaxed));
        (f64::from(a) + 1.0, f64::from(b) + 1.0)
    }
}
