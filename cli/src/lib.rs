//! `userctl`: runs the stack (`up`, `down`, `status`, `logs`, `scale`, `restart`, `stats`) and
//! uses it (`register`, `login`, `whoami`, `logout`, `dashboard`).
//!
//! - [`args`]: the command line (`docs/design.md`'s contract).
//! - [`commands`]: one function per command; they print, everything else returns values.
//! - [`config`]: the stack file and the layers `up` resolves (flags, env, file, last up).
//! - [`runtime`]: where the stack runs — Docker containers or local processes — behind one
//!   [`runtime::Runtime`]; [`runtime::launch`] says once how each service starts.
//! - [`export`]: the stack written out for a cluster (`export kubernetes`), as data.
//! - [`bench`]: the load generator behind `userctl bench`, with same-run baselines.
//! - [`client`]: the gateway client and what its statuses mean to a user.
//! - [`output`]: tables and colours for what commands print.
//! - [`home`]: state under `USERCTL_HOME`: tokens, signing keys, generated passwords, addresses,
//!   the stack's certificates. [`pki`]: the stack's CA and what it issues (no I/O).
//! - [`stack`]: the shared words (services, runtimes, ports, images, state, health); depends
//!   on nothing else here. [`procfs`]: the one reader of `/proc`.
//! - [`error`]: one error type carrying the exit code; library errors get theirs here.
//!
//! Modules point one way: commands → export → runtime / client / bench / output → home → pki →
//! stack.

pub mod args;
pub mod bench;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod export;
pub mod home;
pub mod output;
pub mod pki;
pub mod procfs;
pub mod runtime;
pub mod stack;
pub mod telemetry;

use args::{Cli, Command};
use error::Result;
use home::ProjectHome;

/// Runs one command to completion on a runtime of its own. The runtime is started here, not
/// in `main`: polling the command's future is what compiles every async function it awaits,
/// and in a release build a binary that polled it would compile them all again beside the
/// library's copies (BENCHMARKS.md, "Build time").
pub fn run_blocking(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|err| error::CliError::failed(format!("cannot start: {err}")))?;
    runtime.block_on(run(cli))
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> Result<()> {
    let home = ProjectHome::resolve(&cli.project)?;
    let gateway = cli.gateway;
    match cli.command {
        Command::Up(args) => commands::stack::up(&home, cli.file.as_deref(), args).await,
        Command::Down(args) => commands::stack::down(&home, args).await,
        Command::Status(args) => commands::stack::status(&home, args).await,
        Command::Scale(args) => commands::stack::scale(&home, cli.file.as_deref(), args).await,
        Command::Restart(args) => commands::stack::restart(&home, args).await,
        Command::Keys(args) => commands::keys::run(&home, cli.file.as_deref(), args).await,
        Command::Stats(args) => commands::stats::show(&home, args).await,
        Command::Logs(args) => commands::stack::logs(&home, args).await,
        Command::Register(args) => commands::account::register(&home, gateway, args).await,
        Command::Login(args) => commands::account::login(&home, gateway, args).await,
        Command::Whoami(args) => commands::account::whoami(&home, gateway, args).await,
        Command::Logout => commands::account::logout(&home, gateway).await,
        Command::Dashboard(args) => commands::dashboard::run(&home, gateway, args).await,
        Command::Bench(args) => commands::bench::run(&home, gateway, args).await,
        Command::Config(args) => commands::config::show(&home, cli.file.as_deref(), args),
        Command::Export(args) => commands::export::run(args),
        Command::Completions(args) => {
            commands::completions::print(args);
            Ok(())
        }
        Command::Supervise => Ok(runtime::local::supervise(&home).await?),
    }
}
