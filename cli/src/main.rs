//! `userctl`: parses the command line, runs the command, turns the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = userctl::args::Cli::parse();
    userctl::telemetry::init(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            return userctl::error::report(&userctl::error::CliError::failed(format!(
                "cannot start: {err}"
            )));
        }
    };
    match runtime.block_on(userctl::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => userctl::error::report(&err),
    }
}
