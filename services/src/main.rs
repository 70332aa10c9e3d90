//! `usersvc`: the services' one binary; the command line and what it runs are
//! [`usersvc::cli`].

fn main() -> std::process::ExitCode {
    usersvc::cli::main()
}
