//! The local runtime: the three `usersvc` processes (and, unless `--redis-url` names one, a
//! `redis-server`) on 127.0.0.1, supervised by a detached `userctl supervise` process that
//! restarts what dies and drains everything on SIGTERM. SQLite lives in the project's home.
//!
//! `up` writes a [`Plan`] and starts the supervisor; the supervisor writes [`SupervisorState`];
//! `status`, `logs` and `down` read both. Files live in `$USERCTL_HOME/<project>/local/`.

mod plan;
mod supervisor;

use std::{
    fs, io,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use backon::{ConstantBuilder, Retryable as _};
use nix::{sys::signal::Signal, unistd::Pid};
pub use plan::{Plan, ProcessState, RedisPlan, SupervisorState};
pub use supervisor::supervise;

use super::{Endpoints, RuntimeError, Service, ServiceStatus, StackSpec, progress::Progress};
use crate::{args::StoreKind, client, home::ProjectHome};

/// How long `down` waits for the supervisor to drain before it gives up.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Restarts during start-up after which `up` reports the service as failing. One is not
/// enough: a port chosen free can be taken for a moment by another socket before the service
/// binds it, and the supervisor's retry then succeeds.
const GIVE_UP_AFTER_RESTARTS: u64 = 3;
/// How often readiness and exits are polled.
const POLL: Duration = Duration::from_millis(100);

pub struct LocalRuntime {
    home: ProjectHome,
}

impl LocalRuntime {
    pub fn new(home: ProjectHome) -> Self {
        Self { home }
    }

    fn dir(&self) -> PathBuf {
        self.home.local_dir()
    }

    pub async fn up(
        &self,
        spec: &StackSpec,
        progress: &Progress,
    ) -> Result<Endpoints, RuntimeError> {
        if spec.store != StoreKind::Sqlite {
            return Err(RuntimeError::other(
                "the local runtime",
                "it stores data in SQLite; pass --store sqlite, or --runtime docker for Postgres",
            ));
        }
        let dir = self.dir();
        self.home
            .ensure_dir(&dir)
            .map_err(|err| RuntimeError::other("preparing the local runtime", err))?;
        let jwt_key = self
            .home
            .ensure_jwt_key()
            .map_err(|err| RuntimeError::other("preparing the JWT key", err))?;

        let running = self.running_plan();
        let wanted_fingerprint = plan::fingerprint(spec)?;
        if let Some(plan) = &running {
            if plan.fingerprint == wanted_fingerprint {
                let endpoints = plan.endpoints();
                if self
                    .wait_healthy(plan, spec.wait_timeout, progress, true)
                    .await
                    .is_ok()
                {
                    return Ok(endpoints);
                }
            }
            // Changed or broken: start over with the new plan.
            self.stop().await?;
        }

        let plan = Plan {
            fingerprint: wanted_fingerprint,
            usersvc: spec.usersvc.clone(),
            redis: match &spec.redis_url {
                Some(url) => RedisPlan::External { url: url.clone() },
                None => RedisPlan::Spawn {
                    port: free_port(Service::Redis, 0)?,
                    password: crate::home::random_password(),
                },
            },
            store_port: free_port(Service::Store, spec.ports.store)?,
            cache_port: free_port(Service::Cache, spec.ports.cache)?,
            gateway_port: free_port(Service::Gateway, spec.ports.gateway)?,
            http_port: free_port(Service::Gateway, spec.ports.http)?,
            database_url: format!("sqlite://{}", dir.join("userctl.db").display()),
            jwt_key,
            cors_origins: spec.cors_origins.clone(),
        };
        plan.save(&dir)?;
        self.spawn_supervisor()?;
        self.wait_healthy(&plan, spec.wait_timeout, progress, false)
            .await?;
        Ok(plan.endpoints())
    }

    pub async fn down(&self, volumes: bool) -> Result<(), RuntimeError> {
        self.stop().await?;
        if volumes {
            let dir = self.dir();
            for name in [
                "userctl.db",
                "userctl.db-wal",
                "userctl.db-shm",
                "redis.conf",
                "plan.json",
            ] {
                remove_if_present(&dir.join(name))?;
            }
        }
        Ok(())
    }

    pub async fn status(&self) -> Result<Vec<ServiceStatus>, RuntimeError> {
        let dir = self.dir();
        let plan = Plan::load(&dir)?;
        let state = SupervisorState::load(&dir)?.filter(|state| pid_alive(state.pid));
        let now = now_secs();
        let mut statuses = Vec::new();
        for service in Service::ALL {
            let process = state.as_ref().and_then(|state| state.process(service));
            let address = plan
                .as_ref()
                .and_then(|plan| plan.published(service))
                .filter(|_| process.is_some());
            let (state_name, health) = match (service, &plan, process) {
                (Service::Postgres, _, _) => ("unused".to_owned(), "none".to_owned()),
                (
                    Service::Redis,
                    Some(Plan {
                        redis: RedisPlan::External { .. },
                        ..
                    }),
                    _,
                ) => ("external".to_owned(), "none".to_owned()),
                (_, _, None) => ("absent".to_owned(), "none".to_owned()),
                (_, _, Some(process)) => {
                    let health = match (&address, process.state.as_str()) {
                        (Some(addr), "running")
                            if client::is_serving(addr, Duration::from_secs(1)).await =>
                        {
                            "healthy"
                        }
                        (Some(_), "running") => "unhealthy",
                        (None, _) => "none",
                        _ => "unhealthy",
                    };
                    (process.state.clone(), health.to_owned())
                }
            };
            statuses.push(ServiceStatus {
                service,
                uptime_secs: process
                    .filter(|p| p.state == "running")
                    .map(|p| now.saturating_sub(p.started_at)),
                restarts: process.map(|p| p.restarts),
                state: state_name,
                health,
                address,
            });
        }
        Ok(statuses)
    }

    pub async fn logs(
        &self,
        service: Option<Service>,
        follow: bool,
        tail: Option<usize>,
    ) -> Result<(), RuntimeError> {
        let dir = self.dir();
        let services: Vec<Service> = match service {
            Some(service) => vec![service],
            None => Service::ALL
                .into_iter()
                .filter(|s| *s != Service::Postgres)
                .collect(),
        };
        let prefix = services.len() > 1;
        let mut offsets = Vec::new();
        for service in &services {
            let path = plan::log_path(&dir, *service);
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let start = tail.map_or(0, |n| lines.len().saturating_sub(n));
            for line in &lines[start..] {
                print_line(*service, line, prefix);
            }
            offsets.push((*service, path, text.len() as u64));
        }
        if !follow {
            return Ok(());
        }
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = ticks.tick() => {}
            }
            for (service, path, offset) in &mut offsets {
                let Ok(text) = fs::read(&*path) else { continue };
                if (text.len() as u64) < *offset {
                    *offset = 0; // truncated or replaced
                }
                let start = usize::try_from(*offset).unwrap_or(0);
                let new = String::from_utf8_lossy(&text[start..]);
                if let Some(end) = new.rfind('\n') {
                    for line in new[..end].lines() {
                        print_line(*service, line, prefix);
                    }
                    *offset += end as u64 + 1;
                }
            }
        }
    }

    /// The local Redis, for the bench's baseline.
    pub fn redis_url(&self) -> Option<String> {
        Plan::load(&self.dir())
            .ok()
            .flatten()
            .map(|plan| plan.redis_url())
    }

    /// The running service processes.
    pub fn pids(&self) -> Vec<(Service, u32)> {
        let state = SupervisorState::load(&self.dir())
            .ok()
            .flatten()
            .filter(|state| pid_alive(state.pid));
        state
            .map(|state| {
                state
                    .services
                    .iter()
                    .filter_map(|p| Some((p.service, p.pid?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn recent_logs(&self, service: Service, tail: usize) -> Vec<String> {
        last_lines(&self.dir(), service, tail)
    }

    /// The plan of a supervisor that is still alive.
    fn running_plan(&self) -> Option<Plan> {
        let dir = self.dir();
        let state = SupervisorState::load(&dir).ok().flatten()?;
        if !pid_alive(state.pid) {
            return None;
        }
        Plan::load(&dir).ok().flatten()
    }

    fn spawn_supervisor(&self) -> Result<(), RuntimeError> {
        let exe = std::env::current_exe()
            .map_err(|err| RuntimeError::other("finding userctl's own path", err))?;
        let dir = self.dir();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("supervisor.log"))
            .map_err(|err| RuntimeError::other("opening the supervisor log", err))?;
        let log2 = log
            .try_clone()
            .map_err(|err| RuntimeError::other("opening the supervisor log", err))?;
        // A process group of its own: ctrl-c in this terminal must not stop the stack.
        std::process::Command::new(exe)
            .args(["--project", &self.home.name, "supervise"])
            .env(
                "USERCTL_HOME",
                self.home.dir.parent().unwrap_or(Path::new(".")),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|err| RuntimeError::other("starting the local supervisor", err))?;
        Ok(())
    }

    /// Waits until every service of `plan` answers its health check; fails fast when the
    /// supervisor reports a service exited.
    async fn wait_healthy(
        &self,
        plan: &Plan,
        timeout: Duration,
        progress: &Progress,
        already_running: bool,
    ) -> Result<(), RuntimeError> {
        let dir = self.dir();
        let deadline = tokio::time::Instant::now() + timeout;
        for service in [
            Service::Redis,
            Service::Store,
            Service::Cache,
            Service::Gateway,
        ] {
            let line = progress.service(service);
            let Some(addr) = plan.published(service) else {
                line.done(match plan.redis {
                    RedisPlan::External { .. } => "external",
                    RedisPlan::Spawn { .. } => "running",
                });
                continue;
            };
            line.phase(if already_running {
                "checking health"
            } else {
                "waiting for health"
            });
            loop {
                if client::is_serving(&addr, Duration::from_secs(1)).await {
                    line.done(if already_running {
                        "unchanged"
                    } else {
                        "healthy"
                    });
                    break;
                }
                if let Some(process) =
                    SupervisorState::load(&dir)?.and_then(|state| state.process(service).cloned())
                    && process.restarts >= GIVE_UP_AFTER_RESTARTS
                {
                    line.fail("exited");
                    return Err(RuntimeError::Exited {
                        service: service.name(),
                        logs: last_lines(&dir, service, 10),
                    });
                }
                if tokio::time::Instant::now() >= deadline {
                    line.fail("not healthy");
                    return Err(RuntimeError::Unhealthy {
                        service: service.name(),
                        timeout,
                        logs: last_lines(&dir, service, 10),
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Stops the supervisor (which drains its services) and waits for it to exit; with no
    /// supervisor left, stops any service process it left behind.
    async fn stop(&self) -> Result<(), RuntimeError> {
        let dir = self.dir();
        let Some(state) = SupervisorState::load(&dir)? else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(state.pid).unwrap_or(i32::MAX));
        if pid_alive(state.pid) {
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            let gone = || async {
                if pid_alive(state.pid) {
                    Err(())
                } else {
                    Ok(())
                }
            };
            let attempts = (STOP_TIMEOUT.as_millis() / POLL.as_millis()) as usize;
            if gone
                .retry(
                    ConstantBuilder::default()
                        .with_delay(POLL)
                        .with_max_times(attempts),
                )
                .await
                .is_err()
            {
                return Err(RuntimeError::other(
                    "stopping the local stack",
                    format!(
                        "the supervisor (pid {}) did not exit within {STOP_TIMEOUT:?}",
                        state.pid
                    ),
                ));
            }
        } else {
            for process in &state.services {
                if let Some(child) = process.pid.filter(|pid| pid_alive(*pid)) {
                    let _ = nix::sys::signal::kill(
                        Pid::from_raw(i32::try_from(child).unwrap_or(i32::MAX)),
                        Signal::SIGTERM,
                    );
                }
            }
        }
        remove_if_present(&plan::state_path(&dir))
    }
}

/// `requested`, checked free; or with 0, a free port chosen now.
fn free_port(service: Service, requested: u16) -> Result<u16, RuntimeError> {
    let listener =
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, requested)).map_err(|_| {
            RuntimeError::PortTaken {
                service: service.name(),
                port: requested,
            }
        })?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| RuntimeError::other("choosing a free port", err))
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence; a zombie child of ours would still count, but the
    // supervisor is never our child for long (it is re-parented once we exit).
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
}

fn last_lines(dir: &Path, service: Service, n: usize) -> Vec<String> {
    let text = fs::read_to_string(plan::log_path(dir, service)).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn print_line(service: Service, line: &str, prefix: bool) {
    if prefix {
        println!("{:<8} | {line}", service.name());
    } else {
        println!("{line}");
    }
}

fn remove_if_present(path: &Path) -> Result<(), RuntimeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(RuntimeError::other(
            format!("removing {}", path.display()),
            err,
        )),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
