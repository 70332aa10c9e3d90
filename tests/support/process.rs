//! A real `usersvc` process on 127.0.0.1:0, as the runtimes start it: its address read from its
//! own "serving" log line, its stderr kept (so tests can check what it logs), and signals sent
//! to it as an orchestrator would; and [`ProcessStack`], a whole stack of them.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    sync::oneshot,
};
use tonic::transport::Channel;
use userctl_proto::gateway::v1::gateway_client::GatewayClient;

pub struct Usersvc {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Usersvc {
    /// Runs `usersvc SERVICE --listen 127.0.0.1:0 ARGS…` with `envs`, and waits until it logs the
    /// address it serves on and reports SERVING.
    pub async fn start(service: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_on(service, "127.0.0.1:0", args, envs).await
    }

    /// [`Usersvc::start`] on a given address (e.g. the one a stopped instance had).
    pub async fn start_on(
        service: &str,
        listen: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(crate::cli::binary("usersvc"))
            .arg(service)
            .args(["--listen", listen])
            .args(args)
            // The gateway's HTTP front door defaults to a fixed port; tests run side by side.
            .env("USERSVC_HTTP_LISTEN", "127.0.0.1:0")
            .envs(envs.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn usersvc");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = oneshot::channel();
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let serving = format!("{service} serving");
        tokio::spawn({
            let log = log.clone();
            async move {
                let mut addr_tx = Some(addr_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains(&serving)
                        && let Some(addr) = line
                            .split_whitespace()
                            .find_map(|field| field.strip_prefix("addr="))
                        && let Some(tx) = addr_tx.take()
                    {
                        let _ = tx.send(addr.to_owned());
                    }
                    let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
            Ok(Ok(addr)) => format!("http://{addr}"),
            _ => panic!(
                "usersvc {service} did not report its address; it logged:\n{}",
                log.lock().unwrap_or_else(|p| p.into_inner())
            ),
        };
        crate::eventually(Duration::from_secs(10), || {
            usersvc::health::probe(&addr, Duration::from_secs(1), None)
        })
        .await
        .expect("usersvc reports SERVING");
        Self { addr, child, log }
    }

    /// Its process id, e.g. to read its memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running process")
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Sends SIGTERM, as `docker stop` and the local supervisor do.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running process") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
    }

    /// Sends SIGKILL: the process dies at once, with calls in flight and no drain, as in a
    /// crash or `docker kill`.
    pub fn kill(&self) {
        let pid = self.child.id().expect("running process") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("send SIGKILL");
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .map(|status| status.expect("wait for usersvc"))
    }
}

/// Store, cache and gateway as real `usersvc` processes, `replicas` each of the store and the
/// cache, wired as by hand (plaintext, a key set of its own), the gateway logging at info.
pub struct ProcessStack {
    pub stores: Vec<Usersvc>,
    pub caches: Vec<Usersvc>,
    pub gateway: Usersvc,
    /// A client of the gateway, connected.
    pub client: GatewayClient<Channel>,
    key_file: PathBuf,
    _key_dir: TempDir,
}

impl ProcessStack {
    pub async fn start(database_url: &str, redis_url: &str, replicas: usize) -> Self {
        let key_dir = tempfile::tempdir().expect("key dir");
        let key_file = crate::keys::write_key_set(key_dir.path());
        let env = [("RUST_LOG", "info")];
        let mut stores = Vec::new();
        for _ in 0..replicas {
            stores.push(Usersvc::start("store", &["--database-url", database_url], &env).await);
        }
        let store_addrs = next_hop(&stores);
        let mut caches = Vec::new();
        for _ in 0..replicas {
            let args = ["--redis-url", redis_url, "--store-addr", &store_addrs];
            caches.push(Usersvc::start("cache", &args, &env).await);
        }
        let key = key_file.display().to_string();
        let gateway = Usersvc::start(
            "gateway",
            &["--cache-addr", &next_hop(&caches), "--signing-keys", &key],
            &env,
        )
        .await;
        let client = GatewayClient::new(
            Channel::from_shared(gateway.addr.clone())
                .expect("address")
                .connect()
                .await
                .expect("connect"),
        );
        Self {
            stores,
            caches,
            gateway,
            client,
            key_file,
            _key_dir: key_dir,
        }
    }

    /// The gateway's signing key set file (`signing-keys.json`).
    pub fn signing_keys(&self) -> &Path {
        &self.key_file
    }
}

/// How a hop names `replicas`: one by its address, as by hand; several as a list of
/// `http://localhost:PORT`, so the hop resolves a name and balances (docs/design.md, Replicas).
fn next_hop(replicas: &[Usersvc]) -> String {
    match replicas {
        [one] => one.addr.clone(),
        several => several
            .iter()
            .map(|service| service.addr.replace("127.0.0.1", "localhost"))
            .collect::<Vec<_>>()
            .join(","),
    }
}
