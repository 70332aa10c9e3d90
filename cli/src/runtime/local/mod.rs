//! The local runtime: every replica of the three `usersvc` services (and, unless `--redis-url`
//! names one, a `redis-server`; with two or more gateways, HAProxy in front of them) on
//! 127.0.0.1, supervised by a detached `userctl supervise` process that restarts what dies and
//! drains everything on SIGTERM. SQLite lives in the project's home.
//!
//! `up` writes a [`Plan`] and starts the supervisor; the supervisor writes [`SupervisorState`];
//! `status`, `logs` and `down` read both. When only the replica counts change, `up` rewrites
//! the plan and sends the running supervisor SIGHUP, and the supervisor converges without
//! restarting what did not change. Files live in `$USERCTL_HOME/<project>/local/`.

mod plan;
mod probe;
mod proxy;
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
use futures::future;
use nix::{sys::signal::Signal, unistd::Pid};
pub use plan::{GatewayPorts, Plan, ProcessState, RedisPlan, SupervisorState};
pub use supervisor::supervise;

use super::{
    Endpoints, RuntimeError, StackSpec, Usage,
    progress::{Progress, ServiceProgress},
};
use crate::{
    home::ProjectHome,
    procfs,
    stack::{Health, LogLine, Replicas, Service, ServiceStatus, State, StoreKind},
};

/// How long `down` waits for the supervisor to drain before it gives up.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Restarts during start-up after which `up` reports the service as failing. One is not
/// enough: a port chosen free can be taken for a moment by another socket before the service
/// binds it, and the supervisor's retry then succeeds.
const GIVE_UP_AFTER_RESTARTS: u64 = 3;
/// How often readiness and exits are polled.
const POLL: Duration = Duration::from_millis(100);
/// How long a replica that just turned healthy gets to be found by its clients before the
/// next one stops: twice `usersvc`'s `client::RESOLVE_INTERVAL` (1 s), the period at which a
/// balanced channel looks at its list again; the proxy's health checks, every 500 ms, find it
/// sooner.
const FOUND_AFTER: Duration = Duration::from_secs(2);

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
        // Before anything changes: two gateways need the proxy.
        let haproxy = match spec.replicas.gateway {
            0 | 1 => None,
            gateways => Some(find_haproxy(gateways)?),
        };
        let dir = self.dir();
        self.home.ensure_dir(&dir)?;
        let signing_keys = self.home.ensure_signing_keys()?;
        let tls_dir = self.home.ensure_tls()?;
        let tls = self.home.tls_files()?.ok_or_else(|| {
            RuntimeError::other(
                format!("reading the certificates in {}", tls_dir.display()),
                "a file is missing",
            )
        })?;

        let running = self.running_plan();
        let wanted_fingerprint = plan::fingerprint(spec, &tls)?;
        if let Some(plan) = running {
            if plan.fingerprint == wanted_fingerprint {
                if plan.replicas() != spec.replicas && self.supervisor_converges() {
                    return self.scale(plan, spec, haproxy, progress).await;
                }
                if plan.replicas() == spec.replicas
                    && self
                        .wait_healthy(&plan, spec.wait_timeout, progress, true)
                        .await
                        .is_ok()
                {
                    return Ok(plan.endpoints());
                }
            }
            // Changed or broken: start over with the new plan.
            self.stop().await?;
        } else {
            // A supervisor that died may have left services serving the same SQLite file.
            self.stop().await?;
        }

        let generation = Plan::load(&dir)
            .ok()
            .flatten()
            .map_or(0, |plan| plan.generation + 1);
        let mut ports = PortPicker::default();
        let plan = Plan {
            fingerprint: wanted_fingerprint,
            generation,
            usersvc: spec.usersvc.clone(),
            redis: match &spec.redis_url {
                Some(url) => RedisPlan::External { url: url.clone() },
                None => RedisPlan::Spawn {
                    port: ports.pick(Service::Redis, 0)?,
                    password: crate::home::random_password(),
                },
            },
            store_port: ports.pick(Service::Store, spec.ports.store)?,
            cache_port: ports.pick(Service::Cache, spec.ports.cache)?,
            gateway_port: ports.pick(Service::Gateway, spec.ports.gateway)?,
            http_port: ports.pick(Service::Gateway, spec.ports.http)?,
            stores: Vec::new(),
            caches: Vec::new(),
            gateways: Vec::new(),
            haproxy,
            wait_timeout_ms: millis(spec.wait_timeout),
            database_url: format!("sqlite://{}", dir.join("userctl.db").display()),
            signing_keys,
            tls_dir,
            cors_origins: spec.cors_origins.clone(),
            token_ttl_ms: millis(spec.token_ttl),
        }
        .with_replicas(spec.replicas, &mut |service| ports.pick(service, 0))?;
        // The services bind these ports next.
        drop(ports);
        plan.save(&dir)?;
        self.spawn_supervisor()?;
        self.wait_healthy(&plan, spec.wait_timeout, progress, false)
            .await?;
        Ok(plan.endpoints())
    }

    /// Converges the running stack of `running` to `spec`'s replica counts: the supervisor
    /// starts, restarts and stops replicas (see [`supervisor`]); on failure it has put the
    /// stack back as it was, and the plan goes back too.
    async fn scale(
        &self,
        running: Plan,
        spec: &StackSpec,
        haproxy: Option<PathBuf>,
        progress: &Progress,
    ) -> Result<Endpoints, RuntimeError> {
        let dir = self.dir();
        let mut ports = PortPicker::default();
        let mut plan = running
            .clone()
            .with_replicas(spec.replicas, &mut |service| ports.pick(service, 0))?;
        drop(ports);
        let state = SupervisorState::load(&dir)?.ok_or_else(|| RuntimeError::NotUp {
            project: self.home.name.clone(),
            what: "the local supervisor".to_owned(),
        })?;
        // Past any generation tried before, including one that failed and was put back.
        plan.generation = running.generation.max(state.applied) + 1;
        plan.haproxy = haproxy.or_else(|| running.haproxy.clone());
        plan.wait_timeout_ms = millis(spec.wait_timeout);
        progress.note(&format!(
            "scaling from {} to {}",
            running.replicas(),
            plan.replicas()
        ));
        plan.save(&dir)?;
        signal(state.pid, Signal::SIGHUP);
        // Every replica may start or restart, each after a drain and within the wait timeout.
        let replicas = |r: Replicas| u32::from(r.gateway) + u32::from(r.cache) + u32::from(r.store);
        let steps = replicas(running.replicas()) + replicas(plan.replicas()) + 2;
        let within = (spec.wait_timeout + supervisor::DRAIN_TIMEOUT + FOUND_AFTER) * steps;
        let outcome = self.converged(plan.generation, within, progress).await;
        if let Err(err) = outcome {
            // The supervisor runs the plan it had: say so on disk too.
            running.save(&dir)?;
            return Err(RuntimeError::other(
                format!("scaling project {} to {}", self.home.name, plan.replicas()),
                err,
            ));
        }
        self.wait_healthy(&plan, spec.wait_timeout, progress, false)
            .await?;
        Ok(plan.endpoints())
    }

    /// Waits until the supervisor has converged to plan `generation`, showing what it does;
    /// its error, that it died, or that it took longer than `within`, otherwise.
    async fn converged(
        &self,
        generation: u64,
        within: Duration,
        progress: &Progress,
    ) -> Result<(), String> {
        let dir = self.dir();
        let deadline = tokio::time::Instant::now() + within;
        let mut shown = None;
        loop {
            let state = SupervisorState::load(&dir)
                .map_err(|err| err.to_string())?
                .filter(|state| pid_alive(state.pid))
                .ok_or("the supervisor exited")?;
            if state.applied == generation {
                return state.error.map_or(Ok(()), Err);
            }
            if state.phase.is_some() && state.phase != shown {
                if let Some(phase) = &state.phase {
                    progress.note(phase);
                }
                shown = state.phase;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the supervisor did not finish within {within:?} (see {})",
                    dir.join("supervisor.log").display()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the running supervisor converges on SIGHUP (one started by a `userctl` from
    /// before replicas would die of it).
    fn supervisor_converges(&self) -> bool {
        SupervisorState::load(&self.dir())
            .ok()
            .flatten()
            .is_some_and(|state| state.converges)
    }

    /// A rolling restart of `service`'s replicas (see [`crate::runtime::Runtime::restart`]):
    /// each drains on SIGTERM and the supervisor starts it again at once; the next stops when
    /// the new one serves and has had [`FOUND_AFTER`] to be found.
    pub async fn restart(&self, service: Service, progress: &Progress) -> Result<(), RuntimeError> {
        let plan = self.running_plan().ok_or_else(|| RuntimeError::NotUp {
            project: self.home.name.clone(),
            what: service.name().to_owned(),
        })?;
        let count = plan.replicas().of(service);
        let line = progress.service(service);
        if count == 1 {
            line.note(&format!(
                "one replica: calls to the {service} fail while it restarts (run two or more to avoid that)"
            ));
        }
        for replica in 1..=count {
            self.restart_replica(&plan, service, replica, &line).await?;
        }
        line.done(&format!(
            "restarted {count} replica{}",
            if count == 1 { "" } else { "s" }
        ));
        Ok(())
    }

    /// Restarts one replica: SIGTERM, then waits until the supervisor's new process serves,
    /// and [`FOUND_AFTER`] more. A replica with no process (the supervisor is starting it
    /// again after a crash) is left to the supervisor.
    async fn restart_replica(
        &self,
        plan: &Plan,
        service: Service,
        replica: u16,
        line: &ServiceProgress,
    ) -> Result<(), RuntimeError> {
        let dir = self.dir();
        let pid = || -> Result<Option<u32>, RuntimeError> {
            Ok(SupervisorState::load(&dir)?
                .and_then(|state| state.process(service, replica).and_then(|p| p.pid)))
        };
        let Some(old) = pid()? else {
            line.note(&format!(
                "{service}.{replica} is not running; the supervisor is restarting it"
            ));
            return Ok(());
        };
        line.phase(&format!("restarting {service}.{replica} (pid {old})"));
        signal(old, Signal::SIGTERM);
        let addr = plan.address(service, replica).unwrap_or_default();
        let timeout = plan.wait_timeout() + supervisor::DRAIN_TIMEOUT;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pid()?.is_some_and(|pid| pid != old)
                && probe::serving(&self.home, service, &addr).await
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                line.fail("not healthy");
                return Err(RuntimeError::Unhealthy {
                    service: service.name(),
                    timeout,
                    logs: last_lines(&dir, service, replica, 10),
                });
            }
            tokio::time::sleep(POLL).await;
        }
        line.phase(&format!(
            "{service}.{replica} serves; letting its clients find it"
        ));
        tokio::time::sleep(FOUND_AFTER).await;
        Ok(())
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
            for name in ["redis.conf", "haproxy.cfg", "plan.json"] {
                remove_if_present(&dir.join(name))?;
            }
        }
        Ok(deleted)
    }

    /// One row per replica, in the order of [`Service::ALL`]; a proxy row only when the
    /// proxy is part of the stack.
    pub async fn status(&self) -> Result<Vec<ServiceStatus>, RuntimeError> {
        let dir = self.dir();
        let plan = Plan::load(&dir)?;
        let state = SupervisorState::load(&dir)?.map(tracked);
        let replicas = plan.as_ref().map(Plan::replicas).unwrap_or_default();
        let has_proxy = plan.as_ref().is_some_and(Plan::has_proxy);
        let rows: Vec<(Service, u16)> = Service::ALL
            .into_iter()
            .flat_map(|service| {
                let count = match service {
                    Service::Proxy => u16::from(has_proxy),
                    _ => replicas.of(service),
                };
                (1..=count).map(move |replica| (service, replica))
            })
            .collect();
        let now = now_secs();
        Ok(future::join_all(rows.into_iter().map(|(service, replica)| {
            self.row(plan.as_ref(), state.as_ref(), service, replica, now)
        }))
        .await)
    }

    /// The status of one replica.
    async fn row(
        &self,
        plan: Option<&Plan>,
        state: Option<&SupervisorState>,
        service: Service,
        replica: u16,
        now: u64,
    ) -> ServiceStatus {
        let process = state.and_then(|state| state.process(service, replica));
        let address = plan
            .and_then(|plan| plan.address(service, replica))
            .filter(|_| process.is_some());
        let external = plan.is_some_and(|plan| matches!(plan.redis, RedisPlan::External { .. }));
        let (state, health) = match (service, process) {
            (Service::Postgres, _) => (State::Unused, Health::None),
            (Service::Redis, _) if external => (State::External, Health::None),
            (_, None) => (State::Absent, Health::None),
            (_, Some(process)) => {
                let health = match (&address, process.state) {
                    (Some(addr), State::Running)
                        if probe::serving(&self.home, service, addr).await =>
                    {
                        Health::Healthy
                    }
                    (None, _) => Health::None,
                    _ => Health::Unhealthy,
                };
                (process.state, health)
            }
        };
        let running = process.filter(|p| p.state == State::Running);
        ServiceStatus {
            service,
            replica,
            id: running.and_then(|p| p.pid).map(|pid| pid.to_string()),
            uptime_secs: running.map(|p| now.saturating_sub(p.started_at)),
            restarts: process.map(|p| p.restarts),
            state,
            health,
            address,
            node: None,
        }
    }

    /// The log files of `service` (or every service), one per replica, each with the replica
    /// number to show when the service has more than one.
    fn log_sources(&self, service: Option<Service>) -> Vec<(Service, Option<u16>, PathBuf)> {
        let dir = self.dir();
        let plan = Plan::load(&dir).ok().flatten();
        let replicas = plan.as_ref().map(Plan::replicas).unwrap_or_default();
        let has_proxy = plan.as_ref().is_some_and(Plan::has_proxy);
        Service::ALL
            .into_iter()
            .filter(|s| service.is_none_or(|wanted| wanted == *s))
            .filter(|s| *s != Service::Postgres)
            .filter(|s| *s != Service::Proxy || has_proxy || service.is_some())
            .flat_map(|s| {
                let count = replicas.of(s).max(1);
                let dir = dir.clone();
                (1..=count).map(move |replica| {
                    let shown = (count > 1).then_some(replica);
                    (s, shown, plan::log_path(&dir, s, replica))
                })
            })
            .collect()
    }

    /// Hands each log line to `sink`: what the files hold, then (with `follow`) what is
    /// appended, until ctrl-c. Every replica's lines, each named by its replica when the
    /// service has more than one.
    pub async fn logs(
        &self,
        service: Option<Service>,
        follow: bool,
        tail: Option<usize>,
        sink: &mut (dyn FnMut(LogLine) -> io::Result<()> + Send),
    ) -> Result<(), RuntimeError> {
        let mut offsets = Vec::new();
        let mut lines = Vec::new();
        for (service, replica, path) in self.log_sources(service) {
            let (text, read_to) = read_log(&path, tail).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let start = tail.map_or(0, |n| all.len().saturating_sub(n));
            lines.extend(all[start..].iter().map(|text| LogLine {
                service,
                replica,
                text: (*text).to_owned(),
            }));
            offsets.push((service, replica, path, read_to));
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
            for (service, replica, path, offset) in &mut offsets {
                let Ok(text) = fs::read(&*path) else { continue };
                if (text.len() as u64) < *offset {
                    *offset = 0; // truncated or replaced
                }
                let start = usize::try_from(*offset).unwrap_or(0);
                let new = String::from_utf8_lossy(&text[start..]);
                if let Some(end) = new.rfind('\n') {
                    lines.extend(new[..end].lines().map(|text| LogLine {
                        service: *service,
                        replica: *replica,
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

    /// CPU and memory of each running process (one per replica), from `/proc`; CPU needs two
    /// polls, so it is unknown at first.
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

    /// The running processes, one per replica, in the order of [`Service::ALL`] then replica.
    pub fn pids(&self) -> Vec<(Service, u32)> {
        let state = SupervisorState::load(&self.dir())
            .ok()
            .flatten()
            .map(tracked);
        let mut processes: Vec<&ProcessState> = state
            .as_ref()
            .map(|state| state.services.iter().collect())
            .unwrap_or_default();
        processes.sort_by_key(|p| (Service::ALL.iter().position(|s| *s == p.service), p.replica));
        processes
            .into_iter()
            .filter_map(|p| {
                let pid = p.pid?;
                // HAProxy runs as a master that only supervises and a worker (its child) that
                // carries the traffic: the worker's CPU and memory are the proxy's.
                let pid = match p.service {
                    Service::Proxy => procfs::children(pid).last().copied().unwrap_or(pid),
                    _ => pid,
                };
                Some((p.service, pid))
            })
            .collect()
    }

    /// The last `tail` lines of one service's log: its first replica's.
    pub async fn recent_logs(&self, service: Service, tail: usize) -> Vec<String> {
        // Reads a whole log file: off the async threads.
        let dir = self.dir();
        tokio::task::spawn_blocking(move || last_lines(&dir, service, 1, tail))
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

    /// Waits until every replica of `plan` (and its proxy) answers its health check; fails
    /// fast when the supervisor reports one keeps exiting.
    async fn wait_healthy(
        &self,
        plan: &Plan,
        timeout: Duration,
        progress: &Progress,
        already_running: bool,
    ) -> Result<(), RuntimeError> {
        let dir = self.dir();
        let deadline = tokio::time::Instant::now() + timeout;
        let replicas = plan.replicas();
        for service in [
            Service::Redis,
            Service::Store,
            Service::Cache,
            Service::Gateway,
            Service::Proxy,
        ] {
            if service == Service::Proxy && !plan.has_proxy() {
                continue;
            }
            let line = progress.service(service);
            if service == Service::Redis {
                line.done(match plan.redis {
                    RedisPlan::External { .. } => State::External.name(),
                    RedisPlan::Spawn { .. } => State::Running.name(),
                });
                continue;
            }
            line.phase(if already_running {
                "checking health"
            } else {
                "waiting for health"
            });
            let count = if service == Service::Proxy {
                1
            } else {
                replicas.of(service)
            };
            for replica in 1..=count {
                let addr = plan.address(service, replica).unwrap_or_default();
                loop {
                    if probe::serving(&self.home, service, &addr).await {
                        break;
                    }
                    if let Some(process) = SupervisorState::load(&dir)?
                        .and_then(|state| state.process(service, replica).cloned())
                        && process.restarts >= GIVE_UP_AFTER_RESTARTS
                    {
                        line.fail("exited");
                        return Err(RuntimeError::Exited {
                            service: service.name(),
                            logs: last_lines(&dir, service, replica, 10),
                        });
                    }
                    if tokio::time::Instant::now() >= deadline {
                        line.fail("not healthy");
                        return Err(RuntimeError::Unhealthy {
                            service: service.name(),
                            timeout,
                            logs: last_lines(&dir, service, replica, 10),
                        });
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            let word = if already_running {
                "unchanged"
            } else {
                "healthy"
            };
            line.done(&match count {
                1 => word.to_owned(),
                n => format!("{word} ({n} replicas)"),
            });
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
        if pid_alive(state.pid) {
            signal(state.pid, Signal::SIGTERM);
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

/// Free ports for a plan. Each stays bound until the picker is dropped, so no two picks
/// return the same port; the services bind them after.
#[derive(Default)]
struct PortPicker {
    held: Vec<TcpListener>,
}

impl PortPicker {
    /// `requested`, checked free; or with 0, a free port chosen now.
    fn pick(&mut self, service: Service, requested: u16) -> Result<u16, RuntimeError> {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, requested))
            .map_err(|_| RuntimeError::PortTaken {
                service: service.name(),
                port: requested,
            })?;
        let port = listener
            .local_addr()
            .map(|addr| addr.port())
            .map_err(|err| RuntimeError::other("choosing a free port", err))?;
        self.held.push(listener);
        Ok(port)
    }
}

/// `haproxy` on PATH, which two or more gateways need in front of them.
fn find_haproxy(gateways: u16) -> Result<PathBuf, RuntimeError> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("haproxy"))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            RuntimeError::other(
                format!("running {gateways} gateways"),
                "the proxy in front of them, haproxy, is not on PATH; install it (Debian \
                 package haproxy) or run one gateway",
            )
        })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Sends `signal` to process `pid`; one that is gone already is not an error.
fn signal(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
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

fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence, which a zombie still has: a killed supervisor whose new
    // parent does not reap it is dead all the same.
    nix::sys::signal::kill(Pid::from_raw(raw), None).is_ok() && !procfs::is_zombie(pid)
}

fn last_lines(dir: &Path, service: Service, replica: u16, n: usize) -> Vec<String> {
    let (text, _) = read_log(&plan::log_path(dir, service, replica), Some(n)).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// A log file's text — all of it, or enough of its end for the last `tail` lines — and the
/// length it had, where following it goes on from.
fn read_log(path: &Path, tail: Option<usize>) -> io::Result<(String, u64)> {
    if let Some(lines) = tail {
        let (text, len) = tail_of(path)?;
        if len <= TAIL_BYTES || text.lines().count() >= lines {
            return Ok((text, len));
        }
    }
    let bytes = fs::read(path)?;
    let len = bytes.len() as u64;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), len))
}

/// Longest stretch at the end of a log file read for its last lines: every request logs a line
/// (docs/design.md, "Tracing a request"), so a log can grow by megabytes a second under load,
/// and the dashboard asks for the last lines every second.
const TAIL_BYTES: u64 = 256 * 1024;

/// The end of the file at `path`, from its first whole line within [`TAIL_BYTES`], and how
/// long the file was.
fn tail_of(path: &Path) -> io::Result<(String, u64)> {
    use std::io::{Read as _, Seek as _, SeekFrom};

    let mut file = fs::File::open(path)?;
    let start = file.metadata()?.len().saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let len = start + bytes.len() as u64;
    let text = String::from_utf8_lossy(&bytes);
    let text = match text.split_once('\n') {
        Some((_, whole)) if start > 0 => whole.to_owned(),
        _ => text.into_owned(),
    };
    Ok((text, len))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_of_a_long_log_starts_at_a_whole_line() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cache.log");
        let line =
            "2026-12-02T20:40:18.186574Z  INFO request{…}: answered code=OK elapsed_us=894\n";
        let count = 2 * TAIL_BYTES as usize / line.len();
        fs::write(&path, line.repeat(count) + "the last line\n").expect("write");

        let (tail, len) = tail_of(&path).expect("read");
        assert_eq!(len, fs::metadata(&path).expect("stat").len());
        assert!(tail.len() as u64 <= TAIL_BYTES);
        assert!(tail.starts_with("2026-12-02T"), "{:?}", &tail[..40]);
        assert!(tail.ends_with("the last line\n"));

        // More lines asked for than the end holds: the whole file.
        let (all, _) = read_log(&path, Some(count)).expect("read");
        assert_eq!(all.lines().count(), count + 1);
        let (few, _) = read_log(&path, Some(3)).expect("read");
        assert_eq!(few, tail);

        fs::write(&path, "short\nlog\n").expect("write");
        assert_eq!(
            tail_of(&path).expect("read"),
            ("short\nlog\n".to_owned(), 10)
        );
    }
}
