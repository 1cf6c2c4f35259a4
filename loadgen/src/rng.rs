//! The seedable random generator behind every random choice in loadgen (ids, failure draws,
//! per-server parameters): xoshiro256** from the workspace's `xoshiro` crate, shared with
//! sluice's strategies, so every run can be replayed from a seed.
//!
//! loadgen's draws of an integer below `n` take exactly one value from the stream
//! ([`Rng::below_one_draw`], [`Rng::range_u64`]), as they always have, so a seed still gives the
//! runs it gave.

pub use xoshiro::{mix64, splitmix64, Rng};
