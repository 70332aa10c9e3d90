//! The real `userctl` binary, run as a user would: a process, its own `USERCTL_HOME`, real exit
//! codes.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// `target/<profile>/NAME`, next to the test executable's `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`; the README's test command does)",
        path.display()
    );
    path
}

/// What a finished `userctl` run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with everything printed unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect_code(0)
    }
}

/// `userctl` with a private home and project, talking to whatever `--gateway` the args name.
#[derive(Debug, Clone)]
pub struct Userctl {
    pub home: PathBuf,
    pub project: String,
}

impl Userctl {
    pub fn new(home: &Path) -> Self {
        Self {
            home: home.to_path_buf(),
            project: format!("t{}", rand::random::<u32>()),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary("userctl"));
        command
            .args(args)
            .env("USERCTL_HOME", &self.home)
            .env("USERCTL_PROJECT", &self.project)
            .env("NO_COLOR", "1")
            .env_remove("USERCTL_GATEWAY");
        command
    }

    /// Runs with `stdin` as standard input (for --password-stdin). Off the async runtime, so
    /// an in-process stack keeps serving meanwhile.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        run_command(self.command(args), stdin).await
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || {
            Run::from(command.stdin(Stdio::null()).output().expect("run userctl"))
        })
        .await
        .expect("userctl runner")
    }

    /// The project's state directory under the home.
    pub fn project_dir(&self) -> PathBuf {
        self.home.join(&self.project)
    }
}

/// Runs a prepared `userctl` command (e.g. with extra env) with `stdin` as standard input, off
/// the async runtime so an in-process stack keeps serving meanwhile.
pub async fn run_command(mut command: Command, stdin: &str) -> Run {
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn userctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        Run::from(child.wait_with_output().expect("userctl finishes"))
    })
    .await
    .expect("userctl runner")
}
