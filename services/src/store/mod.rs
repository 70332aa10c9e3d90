//! The entry store: `userctl.user.v1.UserStore` over SQL (Postgres or SQLite).
//!
//! - [`config`]: flags and env vars.
//! - [`database`]: the pool and the queries (users, sessions, refresh tokens); the only place
//!   that speaks SQL.
//! - [`service`]: the gRPC implementation.
//! - [`hash_policy`]: which password hashes the store keeps (none weaker than the stack's).
//! - [`error`]: what can go wrong, and how each maps to a gRPC status.
//! - [`startup`]: connect, migrate, bind.

pub mod config;
pub mod database;
pub mod error;
pub mod hash_policy;
pub mod service;
pub mod startup;

pub use config::Config;
pub use startup::build;
