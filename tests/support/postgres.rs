//! A private Postgres server in a temporary directory, reachable only through a Unix socket
//! there, which a test can stop (as an outage would) and start again. Slower to start than
//! [`crate::database::TestDatabase::postgres`] (an `initdb` each), so only tests that stop the
//! database itself use it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use tempfile::TempDir;

pub struct PostgresServer {
    dir: TempDir,
    bin: PathBuf,
    running: bool,
}

impl PostgresServer {
    /// `initdb` and start; returns once the server accepts connections.
    pub async fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("postgresql installed (run the README's test command, which installs it)")
            .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new()
            .prefix("userctl-test-pg")
            .tempdir()
            .expect("temp dir for postgres");
        let server = Self {
            dir,
            bin,
            running: false,
        };
        // Postgres refuses to run as root; the Debian package provides a `postgres` user.
        if is_root() {
            run(Command::new("chown")
                .arg("postgres:")
                .arg(server.dir.path()));
        }
        let data = server.data();
        run(server.pg("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]));
        let mut server = server;
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost/postgres?host={}",
            self.dir.path().display()
        )
    }

    /// A fast shutdown: open sessions are terminated, as when a database is stopped for real.
    pub async fn stop(&mut self) {
        if self.running {
            self.ctl(&["stop", "-m", "fast", "-w"]).await;
            self.running = false;
        }
    }

    /// Starts the server again on the same socket and waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.stop().await;
        // Prepared transactions outlive sessions and restarts: tests use one to hold a lock
        // across an outage.
        let options = format!(
            "-c listen_addresses='' -k {} -c fsync=off -c max_prepared_transactions=4",
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        self.ctl(&[
            "start",
            "-w",
            "-l",
            &log.display().to_string(),
            "-o",
            &options,
        ])
        .await;
        self.running = true;
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.stdout(Stdio::null());
        command
    }

    async fn ctl(&self, args: &[&str]) {
        let mut command = self.pg("pg_ctl");
        command.arg("-D").arg(self.data()).args(args);
        tokio::task::spawn_blocking(move || run(&mut command))
            .await
            .expect("pg_ctl runner");
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .pg("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["stop", "-m", "immediate"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn is_root() -> bool {
    std::fs::metadata(Path::new("/proc/self"))
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

#[track_caller]
fn run(command: &mut Command) {
    let output = command.output().expect("run a postgres tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
