//! The seedable random generator of the strategies that choose at random (`random`, `p2c`,
//! `bandit`): xoshiro256** from the workspace's `xoshiro` crate, which loadgen's simulator shares.
//! A fixed seed gives the same sequence everywhere, so distribution tests can assert exact counts.

pub(crate) use xoshiro::Rng;
