//! Where a worker is on the machine — processes, mounts, cgroups, shim sockets, link, namespace,
//! directory — found by its name and directory, removed, and checked for leftovers.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    mount::{MntFlags, umount2},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use sha2::{Digest as _, Sha256};

use super::run_blocking;
use crate::POLL_INTERVAL;

/// How long dropping a worker waits for the processes it killed to be gone, so their mounts and
/// cgroups can go too.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// Where a worker is on the machine, by name: enough to find every piece of it, and to check
/// that none is left once it is dropped.
#[derive(Clone, Debug)]
pub struct Footprint {
    /// `usw<pid>-<n>`: its namespace, its containers' cgroup parent, and the stem of its veth
    /// ends' names (one letter more, within a link name's 15 bytes).
    pub(super) name: String,
    /// Holds its configuration, data-root, exec-root, socket, pidfile and log.
    pub(super) dir: PathBuf,
}

impl Footprint {
    pub(super) fn new(name: String, dir: PathBuf) -> Self {
        Self { name, dir }
    }

    /// Removes every piece of the worker, whatever state it was left in (running, killed, half
    /// started), and returns what could not be removed, each with why.
    pub(super) fn remove(&self) -> Vec<String> {
        let mut problems = Vec::new();
        // Processes first (their mounts are busy while they run), then mounts, then what the
        // mounts and processes kept in use.
        self.kill_processes();
        for mount in self.mounts() {
            if let Err(errno) = umount2(&mount, MntFlags::MNT_DETACH) {
                problems.push(format!("unmounting {}: {errno}", mount.display()));
            }
        }
        for cgroup in self.cgroups() {
            remove_cgroup(&cgroup, &mut problems);
        }
        for socket in self.shim_sockets() {
            if let Err(err) = std::fs::remove_file(&socket) {
                problems.push(format!("removing {}: {err}", socket.display()));
            }
        }
        // The link before the namespace: deleting a veth end deletes the pair at once, while a
        // deleted namespace takes its links down in the background, after `ip` has returned.
        if self.host_link_exists()
            && let Err(err) = run_blocking("ip", &["link", "delete", &self.host_link()])
        {
            problems.push(err);
        }
        if self.netns_exists()
            && let Err(err) = run_blocking("ip", &["netns", "delete", &self.name])
        {
            problems.push(err);
        }
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            problems.push(format!("removing {}: {err}", self.dir.display()));
        }
        problems.extend(
            self.remains()
                .into_iter()
                .map(|left| format!("left behind: {left}")),
        );
        problems
    }

    /// Every piece of the worker still on the machine, one line each: empty once it is gone.
    pub fn remains(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .processes()
            .into_iter()
            .map(|process| format!("process {process}"))
            .collect();
        left.extend(
            self.mounts()
                .iter()
                .map(|mount| format!("mount {}", mount.display())),
        );
        left.extend(
            self.cgroups()
                .iter()
                .map(|cgroup| format!("cgroup {}", cgroup.display())),
        );
        left.extend(
            self.shim_sockets()
                .iter()
                .map(|socket| format!("shim socket {}", socket.display())),
        );
        if self.netns_exists() {
            left.push(format!("network namespace {}", self.name));
        }
        if self.host_link_exists() {
            left.push(format!("link {}", self.host_link()));
        }
        if self.dir.exists() {
            left.push(format!("directory {}", self.dir.display()));
        }
        left
    }

    pub(super) fn host_link(&self) -> String {
        format!("{}h", self.name)
    }

    pub(super) fn node_link(&self) -> String {
        format!("{}n", self.name)
    }

    /// The `-H` of its daemon.
    pub(super) fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    pub(super) fn log_file(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The last lines of its daemon's log, for an error that says why it did not start.
    pub(super) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn netns_exists(&self) -> bool {
        Path::new("/var/run/netns").join(&self.name).exists()
    }

    fn host_link_exists(&self) -> bool {
        Path::new("/sys/class/net").join(self.host_link()).exists()
    }

    /// Its live processes: those naming its directory (dockerd, containerd, shims,
    /// fuse-overlayfs, runc) and those in its cgroups (its containers', whose command lines name
    /// nothing of it and whose shims may be dead).
    fn processes(&self) -> Vec<Process> {
        let dir = self.dir.display().to_string();
        let cgroup = format!("/{}", self.name);
        let in_cgroup = |line: &str| {
            line.splitn(3, ':')
                .nth(2)
                .is_some_and(|path| path == cgroup || path.starts_with(&format!("{cgroup}/")))
        };
        live_processes()
            .filter(|process| {
                process.command.contains(&dir)
                    || std::fs::read_to_string(format!("/proc/{}/cgroup", process.pid))
                        .is_ok_and(|cgroups| cgroups.lines().any(in_cgroup))
            })
            .collect()
    }

    /// SIGKILLs its processes and waits (at most [`EXIT_WITHIN`]) until they are gone.
    pub(super) fn kill_processes(&self) {
        let deadline = Instant::now() + EXIT_WITHIN;
        loop {
            let processes = self.processes();
            if processes.is_empty() || Instant::now() >= deadline {
                return;
            }
            for process in processes {
                let _ = kill(Pid::from_raw(process.pid), Signal::SIGKILL);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Its mounts (data-root, overlay layers, network namespaces of its sandboxes), deepest
    /// first so each is unmounted before what it sits on.
    fn mounts(&self) -> Vec<PathBuf> {
        let mut mounts: Vec<PathBuf> = mount_table()
            .into_iter()
            .map(|mount| mount.point)
            .filter(|point| point.starts_with(&self.dir))
            .collect();
        mounts.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
        mounts
    }

    /// The sockets of its containers' shims. containerd 1.6 puts every shim's socket in
    /// /run/containerd/s, whichever containerd started it, named by a hash of that containerd's
    /// address, namespace and container id; a killed shim leaves its socket there. Found from
    /// the containers in its data-root, so only until its directory is removed.
    fn shim_sockets(&self) -> Vec<PathBuf> {
        let address = self.dir.join("exec/containerd/containerd.sock");
        std::fs::read_dir(self.dir.join("data/containers"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|container| {
                let key = address.join("moby").join(container.file_name());
                let hash = Sha256::digest(key.as_os_str().as_encoded_bytes());
                Path::new("/run/containerd/s").join(format!("{hash:x}"))
            })
            .filter(|socket| socket.exists())
            .collect()
    }

    /// Its containers' cgroup parent, in every cgroup hierarchy that has it.
    fn cgroups(&self) -> Vec<PathBuf> {
        mount_table()
            .into_iter()
            .filter(|mount| mount.fs_type == "cgroup" || mount.fs_type == "cgroup2")
            .map(|mount| mount.point.join(&self.name))
            .filter(|cgroup| cgroup.is_dir())
            .collect()
    }
}

/// Removes a cgroup and the ones under it, innermost first (a cgroup is removed with `rmdir`,
/// and only once it has no children).
fn remove_cgroup(cgroup: &Path, problems: &mut Vec<String>) {
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_cgroup(&entry.path(), problems);
            }
        }
    }
    if let Err(err) = std::fs::remove_dir(cgroup) {
        problems.push(format!("removing cgroup {}: {err}", cgroup.display()));
    }
}

/// A process from `/proc`, with its command line.
struct Process {
    pid: i32,
    command: String,
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.pid, self.command)
    }
}

/// Every process but zombies, which are gone already and wait only for their parent.
fn live_processes() -> impl Iterator<Item = Process> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            let command = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (state != "Z").then(|| Process {
                pid,
                command: String::from_utf8_lossy(&command)
                    .trim_end_matches('\0')
                    .replace('\0', " "),
            })
        })
}

struct Mount {
    point: PathBuf,
    fs_type: String,
}

/// This process's mounts, from `/proc/self/mountinfo` (the worker shares its mount namespace).
fn mount_table() -> Vec<Mount> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            Some(Mount {
                point: PathBuf::from(unescape_mount_path(fields.split(' ').nth(4)?)),
                fs_type: rest.split(' ').next()?.to_owned(),
            })
        })
        .collect()
}

/// mountinfo writes a space, tab, newline and backslash in a path as `\040`, `\011`, `\012`,
/// `\134`.
fn unescape_mount_path(path: &str) -> String {
    path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
