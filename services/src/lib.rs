//! The three services of userctl, one library and one binary (`usersvc`).
//!
//! Layout, following the request path from the edge inwards:
//!
//! - [`gateway`]: the front controller and only public API (`userctl.gateway.v1.Gateway`):
//!   validates input, hashes and verifies passwords, mints and checks JWTs.
//! - [`cache`]: the entry cache (`userctl.user.v1.UserStore` + `userctl.cache.v1.CacheStats`):
//!   cache-aside over Redis in front of the store, with the same interface as the store.
//! - [`store`]: the entry store (`userctl.user.v1.UserStore`) over Postgres or SQLite.
//!
//! What they share: [`server`] (health, reflection, [`requests`] (calls, errors and times per RPC), limits, the TLS accept, graceful shutdown),
//! [`client`] (outbound channels with deadlines), [`tls`] (the mutual TLS files and who may
//! call what), [`secret_url`] (passwords handed over as files), [`session`] (session ids, limits, and what the store tells the cache about them), [`health`] (the `usersvc health` probe), [`telemetry`], [`trace`] (one request followed across hops) and [`shutdown`].
//!
//! [`cli`] is the `usersvc` command line, which `main` only calls.
//!
//! Every service is built the same way: `startup::build(config)` binds its listeners (port 0
//! works, which is how the tests run many stacks side by side) and returns a server — a
//! [`server::Server`], or for the gateway a [`gateway::startup::Gateway`] that also serves
//! HTTP — whose `run_until_stopped(token)` serves until the token is cancelled, then drains.

pub mod cache;
pub mod cli;
pub mod client;
pub mod email;
pub mod gateway;
pub mod health;
pub mod requests;
pub mod secret_url;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod trace;
