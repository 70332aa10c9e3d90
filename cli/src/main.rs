//! `userctl`: parses the command line, runs the command, turns the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match userctl::args::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version are not errors: clap prints them as they are.
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        // `userctl` alone prints its help on stderr, with the usage error's code.
        Err(err)
            if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let _ = err.print();
            return ExitCode::from(userctl::error::Exit::Usage as u8);
        }
        Err(err) => return userctl::error::report(&userctl::error::command_line(&err)),
    };
    userctl::telemetry::init(cli.verbose);
    match userctl::run_blocking(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => userctl::error::report(&err),
    }
}
