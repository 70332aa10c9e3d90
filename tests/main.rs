//! The integration and end-to-end tests, one module per concern, linked into one binary: one
//! link step instead of one per file, and one process that runs them all side by side. A test
//! keeps nothing in the process that another could see: no environment variable is set, there
//! is no global, and every Redis, database, stack, home directory and project is its own.
//!
//! Run one module with `scripts/test -p userctl-tests --test e2e -- cache::`, one test by its full name.

mod accounts;
mod bench;
mod browser;
mod cache;
mod cli;
mod concurrent_throttle;
mod config;
mod dashboard;
mod docker_replicas;
mod docker_runtime;
mod enumeration_timing;
mod faults;
mod gateway_memory;
mod http;
mod http_limits;
mod images;
mod input_validation;
mod internal_tls;
mod invisible_characters;
mod keys_rotation;
mod kubernetes_export;
mod local_replicas;
mod local_runtime;
mod malformed_bytes;
mod no_lost_writes;
mod reflection;
mod registration_limits;
mod replicas;
mod sessions;
mod sessions_store;
mod supervisor_death;
mod swarm_nodes;
mod swarm_runtime;
mod throttle_logs;
mod throttling;
mod token_claims;
mod tokens;
mod tracing;
mod wipes;
