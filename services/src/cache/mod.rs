//! The entry cache: `userctl.user.v1.UserStore` as a cache-aside layer over Redis in front of
//! the store, plus `userctl.cache.v1.CacheStats`.
//!
//! - [`config`]: flags and env vars.
//! - [`keys`]: key names and TTLs; change the layout here and bump the version in the prefix.
//! - [`redis`]: the Redis client, which fails open: an error or a slow call is a miss.
//! - [`breaker`]: after Redis failed calls in a row, reads skip it until a probe finds it back.
//! - [`stats`]: counters and the latency window behind `CacheStats`.
//! - [`service`]: the read and write paths.
//! - [`startup`]: wiring them together.
//!
//! Rules (see docs/design.md): values are protobuf bytes under versioned keys with a jittered
//! TTL; a not-found is cached briefly; a create deletes what it touches; concurrent misses on one
//! key make one store call; Redis errors and calls slower than `--redis-timeout` fall through to
//! the store and are counted. Sessions: a read naming one gets the user's and the session's
//! entries in one `MGET`; an active session is cached no longer than a user and never past its
//! expiry, and never over a revocation (`SET NX`); a revocation is written over it for at least
//! 24 h.

pub mod breaker;
pub mod config;
pub mod keys;
pub mod redis;
pub mod service;
pub mod startup;
pub mod stats;

pub use config::Config;
pub use startup::build;
