//! The gateway: the front controller and only public service, over gRPC
//! (`userctl.gateway.v1.Gateway`) and over HTTP/JSON for browsers.
//!
//! - [`config`]: flags and env vars.
//! - [`validate`]: what a well-formed registration or login looks like.
//! - [`password`]: argon2id hashing off the async runtime, with bounded concurrency.
//! - [`token`]: JWTs signed with the stack's key set, strictly validated, and the keys published.
//! - [`throttle`]: login budgets per account and per peer, reserved before verifying, in Redis.
//! - [`service`]: Register, Login, WhoAmI: one implementation for both transports.
//! - [`http`]: the HTTP/JSON front door (the original design's routes), beside gRPC.
//! - [`error`]: every failure, mapped to a gRPC status and to an HTTP response in one place.
//! - [`startup`]: wiring; [`Gateway`] holds both listeners.

pub mod config;
pub mod error;
pub mod http;
pub mod password;
pub mod service;
pub mod startup;
pub mod throttle;
pub mod token;
pub mod validate;

pub use config::Config;
pub use startup::{Gateway, build};
