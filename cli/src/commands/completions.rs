//! `userctl completions SHELL`: a completion script, generated from the command line itself.

use clap::CommandFactory as _;

use crate::args::{Cli, CompletionsArgs};

pub fn print(args: CompletionsArgs) {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
}
