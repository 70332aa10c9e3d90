//! The gateway: the front controller and only public API (`userctl.gateway.v1.Gateway`).
//!
//! - [`config`]: flags and env vars.
//! - [`validate`]: what a well-formed registration or login looks like.
//! - [`password`]: argon2id hashing off the async runtime, with bounded concurrency.
//! - [`token`]: HS256 JWTs, strictly validated.
//! - [`throttle`]: failed-login budgets per account and per peer.
//! - [`service`]: Register, Login, WhoAmI.
//! - [`error`]: every failure, mapped to a gRPC status in one place.
//! - [`startup`]: wiring.

pub mod config;
pub mod error;
pub mod password;
pub mod service;
pub mod startup;
pub mod throttle;
pub mod token;
pub mod validate;

pub use config::Config;
pub use startup::build;
