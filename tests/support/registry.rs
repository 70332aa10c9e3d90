//! A private image registry (Debian's `docker-registry`, the CNCF distribution registry) on a
//! free loopback port, its storage in a temporary directory: where the swarm tests push the
//! services image as a user pushes it for the nodes of a cluster. Docker talks plain HTTP to a
//! registry on 127.0.0.0/8 without being told to.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

/// Dropping it also removes the engine's local tags of images pushed to it: they name a
/// registry that is gone.
pub struct Registry {
    /// `127.0.0.1:PORT`, as image names are written.
    pub addr: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the registry and returns once it listens (it says where, having asked for port 0).
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("registry dir");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry runs (scripts/test installs the Debian package)");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let listening = async {
            while let Some(line) = lines.next_line().await.expect("registry log") {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    return rest.split('"').next().map(str::to_owned);
                }
            }
            None
        };
        let addr = tokio::time::timeout(Duration::from_secs(30), listening)
            .await
            .expect("the registry listens within 30 s")
            .expect("the registry says where it listens");
        // Keep reading, so its log never fills the pipe and blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            addr,
            _child: child,
            _dir: dir,
        }
    }

    /// The repositories it holds (`GET /v2/_catalog`).
    pub async fn repositories(&self) -> Vec<String> {
        let body = reqwest::get(format!("http://{}/v2/_catalog", self.addr))
            .await
            .expect("the registry answers")
            .json::<serde_json::Value>()
            .await
            .expect("a JSON catalog");
        body["repositories"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|name| name.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output();
        let Ok(listed) = listed else { return };
        let prefix = format!("{}/", self.addr);
        for image in String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|image| image.starts_with(&prefix))
        {
            let _ = std::process::Command::new("docker")
                .args(["image", "rm", image])
                .output();
        }
    }
}
