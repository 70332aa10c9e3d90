//! A real Docker swarm of two nodes on one machine: the machine's engine as the manager, and a
//! [`WorkerNode`] — a second `dockerd` in a network namespace of the test's own making — as a
//! worker. Overlay (VXLAN) traffic really crosses between the two, and a node can really be lost.
//!
//! Swarm mode belongs to the whole engine, so a test that touches it holds the [`SwarmLock`] for
//! its whole run: one such test at a time, in this process or any other, and the engine is put
//! back as the lock found it. Swarms are built with the docker CLI, not with the bollard client
//! the product uses, so a swarm test does not rest on the code it tests.
//!
//! Declare the lock before the worker: locals drop in reverse order, so the worker's node is
//! removed from the engine's swarm before the lock makes the engine leave it.
//!
//! - here: [`SwarmLock`], the engine's swarm state, and running the docker CLI;
//! - `swarm/worker.rs`: [`WorkerNode`], started, joined, fed images, lost;
//! - `swarm/footprint.rs`: [`Footprint`], everything a worker puts on the machine, found,
//!   removed and checked for.

mod footprint;
mod worker;

use std::{
    fs::{File, OpenOptions},
    path::PathBuf,
    process::{Command, Output, Stdio},
    str::FromStr,
};

use nix::fcntl::{Flock, FlockArg};

pub use footprint::Footprint;
pub use worker::WorkerNode;

/// The file every swarm test locks. `flock` on the same path from a shell takes the same lock,
/// so a person trying swarm mode by hand does not pull the engine from under a test.
pub fn lock_path() -> PathBuf {
    std::env::temp_dir().join("userctl-tests-swarm.lock")
}

/// An engine's `Swarm.LocalNodeState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Inactive,
    Pending,
    Active,
    Error,
    Locked,
}

impl FromStr for NodeState {
    type Err = String;

    fn from_str(state: &str) -> Result<Self, String> {
        Ok(match state {
            "inactive" => Self::Inactive,
            "pending" => Self::Pending,
            "active" => Self::Active,
            "error" => Self::Error,
            "locked" => Self::Locked,
            other => return Err(format!("unknown swarm node state {other:?}")),
        })
    }
}

/// What swarm mode has left on the machine's engine: what [`SwarmLock`] records and restores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineSwarm {
    pub state: NodeState,
    /// Whether the `docker_gwbridge` network exists: joining a swarm creates it, and leaving
    /// leaves it behind.
    pub gwbridge: bool,
}

impl EngineSwarm {
    pub async fn now() -> Result<Self, String> {
        blocking(Self::read).await
    }

    fn read() -> Result<Self, String> {
        let state = run_blocking("docker", &["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
        Ok(Self {
            state: state.parse()?,
            gwbridge: gwbridge_exists()?,
        })
    }
}

fn gwbridge_exists() -> Result<bool, String> {
    let networks = run_blocking("docker", &["network", "ls", "--format", "{{.Name}}"])?;
    Ok(networks.lines().any(|name| name == "docker_gwbridge"))
}

/// Held by every test that touches swarm mode, for its whole run: an exclusive `flock` on
/// [`lock_path`], which serialises such tests in this process and across processes. Dropping it
/// puts the engine's swarm state back as it was when the lock was taken.
pub struct SwarmLock {
    before: EngineSwarm,
    /// Released after `drop` has restored the engine: fields drop after `Drop::drop` runs.
    _file: Flock<File>,
}

impl SwarmLock {
    /// Waits for the lock (on a blocking thread: another test may hold it for minutes) and
    /// records the engine's swarm state.
    pub async fn acquire() -> Result<Self, String> {
        blocking(|| {
            let path = lock_path();
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|err| format!("opening {}: {err}", path.display()))?;
            let file = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| format!("locking {}: {errno}", path.display()))?;
            Ok(Self {
                before: EngineSwarm::read()?,
                _file: file,
            })
        })
        .await
    }

    /// The engine's swarm state when the lock was taken, which dropping the lock restores.
    pub fn before(&self) -> &EngineSwarm {
        &self.before
    }
}

impl Drop for SwarmLock {
    fn drop(&mut self) {
        let complain = |what: String| eprintln!("swarm lock: {what}");
        match run_blocking("docker", &["info", "--format", "{{.Swarm.LocalNodeState}}"])
            .and_then(|state| state.parse::<NodeState>())
        {
            Ok(state)
                if self.before.state == NodeState::Inactive && state != NodeState::Inactive =>
            {
                if let Err(err) = run_blocking("docker", &["swarm", "leave", "--force"]) {
                    complain(format!("the engine stays in a swarm: {err}"));
                }
            }
            Ok(_) => {}
            Err(err) => complain(format!("cannot tell whether to leave the swarm: {err}")),
        }
        if !self.before.gwbridge {
            match gwbridge_exists() {
                Ok(true) => {
                    if let Err(err) = run_blocking("docker", &["network", "rm", "docker_gwbridge"])
                    {
                        complain(format!("docker_gwbridge stays: {err}"));
                    }
                }
                Ok(false) => {}
                Err(err) => complain(format!(
                    "cannot tell whether docker_gwbridge is left: {err}"
                )),
            }
        }
    }
}

/// Runs `docker ARGS…` against the machine's engine and returns its stdout, trimmed.
pub async fn docker(args: &[&str]) -> Result<String, String> {
    run("docker", args).await
}

/// Runs `f` on a blocking thread, so a wait for the lock or a piped copy of an image does not
/// hold up the test's runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| format!("blocking task: {err}"))?
}

/// Runs a command to its end and returns its stdout, trimmed.
async fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    outcome(&command_line(program, args), output)
}

/// [`run`] for Drop, which cannot await.
fn run_blocking(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output();
    outcome(&command_line(program, args), output)
}

/// A command's stdout, trimmed; a failure to start it or a non-zero exit is an error quoting
/// the command and what it wrote to stderr.
fn outcome(line: &str, output: std::io::Result<Output>) -> Result<String, String> {
    let output = output.map_err(|err| format!("`{line}` did not run: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}
