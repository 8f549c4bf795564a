//! The sans-IO PIAS core.
//!
//! Pure state machines: no sockets, no clock, no threads, no random source. Time arrives as an argument
//! (`now: Instant`), randomness as a seed in the configuration and secrets as an input ([`secrets::Secrets`],
//! drawn by the driver from the OS), and output is polled. The same seed, secrets and sequence of inputs give
//! the same outputs, which is what the simulator, the property tests and the fuzzers rely on.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

#[macro_use]
mod counters;

pub mod agent;
pub mod coords;
pub mod filter;
pub mod flowhash;
#[doc(hidden)]
pub mod fuzzing;
pub mod hysteresis;
pub mod iap;
pub mod keyhash;
pub mod lru;
pub mod membership;
pub mod nat;
pub mod policy;
pub mod proxy;
pub mod rap;
pub mod registry;
pub mod replay;
pub mod ring;
pub mod rng;
pub mod seal;
pub mod secrets;
pub mod time;

pub use time::Instant;
