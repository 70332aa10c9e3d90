//! The local runtime: the three `usersvc` processes (and, unless `--redis-url` names one, a
//! `redis-server`) on 127.0.0.1, supervised by a detached `userctl supervise` process that
//! restarts what dies and drains everything on SIGTERM. SQLite lives in the project's home.
//!
//! `up` writes a [`Plan`] and starts the supervisor; the supervisor writes [`SupervisorState`];
//! `status`, `logs` and `down` read both. Files live in `$USERCTL_HOME/<project>/local/`.

mod plan;
mod probe;
mod supervisor;

use std::{
    collections::HashMap,
    fs, io,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use backon::{ConstantBuilder, Retryable as _};
use nix::{sys::signal::Signal, unistd::Pid};
pub use plan::{Plan, ProcessState, RedisPlan, SupervisorState};
pub use supervisor::supervise;
use tonic::transport::Endpoint;

use super::{Endpoints, RuntimeError, StackSpec, Usage, progress::Progress};
use crate::{
    home::ProjectHome,
    pki::Holder,
    procfs,
    stack::{Health, LogLine, Service, ServiceStatus, State, StoreKind},
};

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
    /// CPU time of each process at the previous usage poll, for a CPU percentage.
    cpu: Mutex<HashMap<u32, (u64, Instant)>>,
}

impl LocalRuntime {
    pub fn new(home: ProjectHome) -> Self {
        Self {
            home,
            cpu: Mutex::new(HashMap::new()),
        }
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
            return Err(RuntimeError::LocalNeedsSqlite { store: spec.store });
        }
        let dir = self.dir();
        self.home.ensure_dir(&dir)?;
        let jwt_key = self.home.ensure_jwt_key()?;
        let tls_dir = self.home.ensure_tls()?;
        let tls = self.home.tls_files()?.ok_or_else(|| {
            RuntimeError::other(
                format!("reading the certificates in {}", tls_dir.display()),
                "a file is missing",
            )
        })?;

        let running = self.running_plan();
        let wanted_fingerprint = plan::fingerprint(spec, &tls)?;
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
        } else {
            // A supervisor that died may have left services serving the same SQLite file.
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
            tls_dir,
            cors_origins: spec.cors_origins.clone(),
        };
        plan.save(&dir)?;
        self.spawn_supervisor()?;
        self.wait_healthy(&plan, spec.wait_timeout, progress, false)
            .await?;
        Ok(plan.endpoints())
    }

    /// Whether `service` at `addr` answers its health check, over mutual TLS with the
    /// `userctl` certificate for the store and cache.
    async fn is_serving(&self, service: Service, addr: &str) -> bool {
        let server_name = Holder::of(service).and_then(Holder::server_name);
        let endpoint = match server_name {
            None => Endpoint::from_shared(addr.to_owned()).ok(),
            Some(name) => match self.home.tls_identity(Holder::Userctl) {
                Ok(Some(identity)) => identity.endpoint(addr, name).ok(),
                // No certificates: the stack cannot be serving over mutual TLS either.
                _ => None,
            },
        };
        match endpoint {
            Some(endpoint) => probe::is_serving(endpoint, Duration::from_secs(1)).await,
            None => false,
        }
    }

    /// A rolling restart of `service`'s replicas (see [`crate::runtime::Runtime::restart`]).
    pub async fn restart(
        &self,
        service: Service,
        _progress: &Progress,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::other(
            format!("restarting {service}"),
            "not supported on this runtime yet",
        ))
    }

    /// Stops the stack; with `volumes` also deletes its SQLite database. Returns the files of
    /// data it deleted. Works as well on a stack that is already stopped.
    pub async fn down(&self, volumes: bool) -> Result<Vec<String>, RuntimeError> {
        self.stop().await?;
        let mut deleted = Vec::new();
        if volumes {
            let dir = self.dir();
            for name in ["userctl.db", "userctl.db-wal", "userctl.db-shm"] {
                let path = dir.join(name);
                if remove_if_present(&path)? {
                    deleted.push(format!("SQLite file {}", path.display()));
                }
            }
            // Derived from the plan, not data: removed without a word.
            for name in ["redis.conf", "plan.json"] {
                remove_if_present(&dir.join(name))?;
            }
        }
        Ok(deleted)
    }

    pub async fn status(&self) -> Result<Vec<ServiceStatus>, RuntimeError> {
        let dir = self.dir();
        let plan = Plan::load(&dir)?;
        let state = SupervisorState::load(&dir)?.map(tracked);
        let now = now_secs();
        let mut statuses = Vec::new();
        for service in Service::ALL {
            let process = state.as_ref().and_then(|state| state.process(service));
            let address = plan
                .as_ref()
                .and_then(|plan| plan.published(service))
                .filter(|_| process.is_some());
            let (state, health) = match (service, &plan, process) {
                (Service::Postgres, _, _) => (State::Unused, Health::None),
                (
                    Service::Redis,
                    Some(Plan {
                        redis: RedisPlan::External { .. },
                        ..
                    }),
                    _,
                ) => (State::External, Health::None),
                (_, _, None) => (State::Absent, Health::None),
                (_, _, Some(process)) => {
                    let health = match (&address, process.state) {
                        (Some(addr), State::Running) if self.is_serving(service, addr).await => {
                            Health::Healthy
                        }
                        (None, _) => Health::None,
                        _ => Health::Unhealthy,
                    };
                    (process.state, health)
                }
            };
            let running = process.filter(|p| p.state == State::Running);
            statuses.push(ServiceStatus {
                service,
                replica: 1,
                id: running.and_then(|p| p.pid).map(|pid| pid.to_string()),
                uptime_secs: running.map(|p| now.saturating_sub(p.started_at)),
                restarts: process.map(|p| p.restarts),
                state,
                health,
                address,
            });
        }
        Ok(statuses)
    }

    /// Hands each log line to `sink`: what the files hold, then (with `follow`) what is
    /// appended, until ctrl-c.
    pub async fn logs(
        &self,
        service: Option<Service>,
        follow: bool,
        tail: Option<usize>,
        sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
    ) -> Result<(), RuntimeError> {
        let dir = self.dir();
        let services: Vec<Service> = match service {
            Some(service) => vec![service],
            None => Service::ALL
                .into_iter()
                .filter(|s| *s != Service::Postgres)
                .collect(),
        };
        let mut offsets = Vec::new();
        let mut lines = Vec::new();
        for service in &services {
            let path = plan::log_path(&dir, *service);
            let text = fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let start = tail.map_or(0, |n| all.len().saturating_sub(n));
            lines.extend(all[start..].iter().map(|text| LogLine {
                service: *service,
                replica: None,
                text: (*text).to_owned(),
            }));
            offsets.push((*service, path, text.len() as u64));
        }
        if send(sink, lines)? || !follow {
            return Ok(());
        }
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = ticks.tick() => {}
            }
            let mut lines = Vec::new();
            for (service, path, offset) in &mut offsets {
                let Ok(text) = fs::read(&*path) else { continue };
                if (text.len() as u64) < *offset {
                    *offset = 0; // truncated or replaced
                }
                let start = usize::try_from(*offset).unwrap_or(0);
                let new = String::from_utf8_lossy(&text[start..]);
                if let Some(end) = new.rfind('\n') {
                    lines.extend(new[..end].lines().map(|text| LogLine {
                        service: *service,
                        replica: None,
                        text: text.to_owned(),
                    }));
                    *offset += end as u64 + 1;
                }
            }
            if send(sink, lines)? {
                return Ok(());
            }
        }
    }

    /// CPU and memory of each running process, from `/proc`; CPU needs two polls, so it is
    /// unknown at first.
    pub fn usage(&self) -> Vec<Usage> {
        let now = Instant::now();
        let ticks_per_second = procfs::ticks_per_second();
        let mut previous = self
            .cpu
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut seen = HashMap::new();
        let mut usage = Vec::new();
        for (service, pid) in self.pids() {
            let ticks = procfs::cpu_ticks(pid);
            let cpu_percent = match (ticks, previous.get(&pid)) {
                (Some(ticks), Some((before, then))) => {
                    let secs = now.duration_since(*then).as_secs_f64();
                    let busy = ticks.saturating_sub(*before) as f64 / ticks_per_second;
                    (secs > 0.0).then(|| busy / secs * 100.0)
                }
                _ => None,
            };
            if let Some(ticks) = ticks {
                seen.insert(pid, (ticks, now));
            }
            usage.push(Usage {
                service,
                cpu_percent,
                memory_bytes: procfs::resident_bytes(pid),
            });
        }
        // Forget processes that are gone, so a recycled pid starts afresh.
        *previous = seen;
        usage
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
            .map(tracked);
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

    /// The last `tail` lines of one service's log.
    pub async fn recent_logs(&self, service: Service, tail: usize) -> Vec<String> {
        // Reads a whole log file: off the async threads.
        let dir = self.dir();
        tokio::task::spawn_blocking(move || last_lines(&dir, service, tail))
            .await
            .unwrap_or_default()
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
                    RedisPlan::External { .. } => State::External.name(),
                    RedisPlan::Spawn { .. } => State::Running.name(),
                });
                continue;
            };
            line.phase(if already_running {
                "checking health"
            } else {
                "waiting for health"
            });
            loop {
                if self.is_serving(service, &addr).await {
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
            if !within_stop_timeout(|| !pid_alive(state.pid)).await {
                return Err(RuntimeError::other(
                    "stopping the local stack",
                    format!(
                        "the supervisor (pid {}) did not exit within {STOP_TIMEOUT:?}",
                        state.pid
                    ),
                ));
            }
        }
        // A supervisor that died (now or before) may have left services running.
        stop_survivors(&state).await?;
        remove_if_present(&plan::state_path(&dir)).map(|_| ())
    }
}

/// `state` as far as it is still true: all of it while its supervisor lives; once it died,
/// only the services that outlived it.
fn tracked(mut state: SupervisorState) -> SupervisorState {
    if !pid_alive(state.pid) {
        let left: Vec<u32> = survivors(&state);
        state
            .services
            .retain(|process| process.pid.is_some_and(|pid| left.contains(&pid)));
    }
    state
}

/// The recorded service processes still alive in the supervisor's process group (its pid:
/// `up` starts it as a group leader and its children stay in the group). The group check
/// tells a survivor from an unrelated process that got a recorded pid again.
fn survivors(state: &SupervisorState) -> Vec<u32> {
    state
        .services
        .iter()
        .filter_map(|process| process.pid)
        .filter(|pid| pid_alive(*pid) && procfs::process_group(*pid) == Some(state.pid))
        .collect()
}

/// Stops what a dead supervisor left running: SIGTERM to its whole process group (so they
/// drain), SIGKILL to what still runs after [`STOP_TIMEOUT`].
async fn stop_survivors(state: &SupervisorState) -> Result<(), RuntimeError> {
    if survivors(state).is_empty() {
        return Ok(());
    }
    let group = Pid::from_raw(-i32::try_from(state.pid).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::kill(group, Signal::SIGTERM);
    if !within_stop_timeout(|| survivors(state).is_empty()).await {
        let _ = nix::sys::signal::kill(group, Signal::SIGKILL);
    }
    Ok(())
}

/// Whether `stopped` came true within [`STOP_TIMEOUT`], checked every [`POLL`]: how `down`
/// waits for signalled processes to exit.
async fn within_stop_timeout(stopped: impl Fn() -> bool) -> bool {
    let check = || async { if stopped() { Ok(()) } else { Err(()) } };
    let attempts = (STOP_TIMEOUT.as_millis() / POLL.as_millis()) as usize;
    check
        .retry(
            ConstantBuilder::default()
                .with_delay(POLL)
                .with_max_times(attempts),
        )
        .await
        .is_ok()
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
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence, which a zombie still has: a killed supervisor whose new
    // parent does not reap it is dead all the same.
    nix::sys::signal::kill(Pid::from_raw(raw), None).is_ok() && !procfs::is_zombie(pid)
}

fn last_lines(dir: &Path, service: Service, n: usize) -> Vec<String> {
    let text = fs::read_to_string(plan::log_path(dir, service)).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Whether there was a file to remove.
fn remove_if_present(path: &Path) -> Result<bool, RuntimeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
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

/// Gives `lines` to `sink`; true when the reader went away (`userctl logs | head`).
fn send(
    sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
    lines: Vec<LogLine>,
) -> Result<bool, RuntimeError> {
    for line in lines {
        match sink(line) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(true),
            Err(err) => return Err(RuntimeError::other("writing logs", err)),
        }
    }
    Ok(false)
}
