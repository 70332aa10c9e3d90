//! `userctl supervise`: the local runtime's supervisor. Starts Redis (unless external), every
//! replica of the store, the cache and the gateway, and HAProxy in front of two or more
//! gateways; restarts whatever exits, with backoff; on SIGHUP converges to the plan `up`
//! rewrote; on SIGTERM stops them in reverse order, each draining its in-flight requests, then
//! exits.
//!
//! Converging changes only what must change, in an order that keeps the stack serving: start
//! the new replicas and wait until they serve; restart, one at a time, the replicas whose
//! command changed (the previous hop of a service whose replica list changed); give the proxy
//! its new gateways (in place, see [`super::proxy`]); only then stop the replicas that go
//! away. If the new replicas never serve, they are stopped again and the stack runs as before.
//!
//! A replica that exits cleanly after running a while was asked to drain (`userctl restart`
//! sends SIGTERM): it starts again at once and does not count as a crash.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use backon::{BackoffBuilder as _, ExponentialBuilder};
use futures::future;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    process::{Child, Command},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::{
    FOUND_AFTER, GIVE_UP_AFTER_RESTARTS, POLL, now_secs,
    plan::{self, Plan, ProcessState, RedisPlan, SupervisorState},
    probe, proxy,
};
use crate::{
    home::ProjectHome,
    runtime::{
        RuntimeError,
        launch::{self, Secret, Wiring},
    },
    stack::{Ports, Service, State},
};

type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// How long a service gets to drain after SIGTERM before it is killed.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(12);
/// A process that ran this long before exiting restarts without the accumulated backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// A clean exit sooner than this after starting is a crash all the same: a drain alone takes
/// a second (the services' grace before they stop accepting).
const DRAINED_AFTER: Duration = Duration::from_secs(1);

/// One process to keep running.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcessSpec {
    service: Service,
    replica: u16,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl ProcessSpec {
    /// `cache.2`, as logs and errors name a replica.
    fn label(&self) -> String {
        label(self.service, self.replica)
    }
}

fn label(service: Service, replica: u16) -> String {
    format!("{}.{replica}", service.name())
}

type SharedState = Arc<Mutex<SupervisorState>>;

pub async fn supervise(home: &ProjectHome) -> Result<()> {
    let dir = home.local_dir();
    let plan = Plan::load(&dir)?.ok_or_else(|| RuntimeError::NothingToSupervise {
        project: home.name.clone(),
    })?;
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).map_err(|err| crate::home::io_error("create", &logs, err))?;
    // Held until this process exits (however it exits): two supervisors on one data directory
    // would run two stacks on one SQLite file.
    let _lock = lock(home, &dir)?;

    let state: SharedState = Arc::new(Mutex::new(SupervisorState {
        pid: std::process::id(),
        services: Vec::new(),
        converges: true,
        applied: plan.generation,
        error: None,
        phase: None,
    }));
    // The handlers first: the saved state says SIGHUP is safe to send.
    let shutdown = on_signal()?;
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|err| RuntimeError::other("handling SIGHUP", err))?;
    save(&state, &dir);

    let mut supervisor = Supervisor {
        home: home.clone(),
        dir: dir.clone(),
        state,
        running: Vec::new(),
        plan: plan.clone(),
    };
    if let Some(redis) = redis_process(&plan, &dir)? {
        supervisor.start(redis);
    }
    for spec in usersvc_processes(&plan) {
        supervisor.start(spec);
    }
    if let Some(proxy) = proxy_process(&plan, &dir)? {
        supervisor.start(proxy);
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hangups.recv() => {
                tokio::select! {
                    _ = supervisor.converge_to_saved_plan() => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
    supervisor.stop_all().await;
    let _ = fs::remove_file(plan::state_path(&dir));
    Ok(())
}

fn lock(home: &ProjectHome, dir: &Path) -> Result<fs::File> {
    let path = dir.join("supervisor.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|err| crate::home::io_error("open", &path, err))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(RuntimeError::other(
            format!("supervising project {}", home.name),
            format!(
                "another supervisor already runs the stack in {}; stop it with `userctl down`",
                dir.display()
            ),
        )),
        Err(fs::TryLockError::Error(err)) => Err(crate::home::io_error("lock", &path, err).into()),
    }
}

/// The `redis-server` of `plan`, unless it names an external Redis.
fn redis_process(plan: &Plan, dir: &Path) -> Result<Option<ProcessSpec>> {
    let RedisPlan::Spawn { port, password } = &plan.redis else {
        return Ok(None);
    };
    // The password goes in a 0600 file, not on the command line where `ps` shows it.
    let conf = dir.join("redis.conf");
    let text = format!(
        "bind 127.0.0.1\nport {port}\nrequirepass {password}\nsave \"\"\nappendonly no\ndir {}\n",
        dir.display()
    );
    crate::home::write_private(&conf, text.as_bytes())?;
    Ok(Some(ProcessSpec {
        service: Service::Redis,
        replica: 1,
        program: "redis-server".into(),
        args: vec![conf.display().to_string()],
        env: Vec::new(),
    }))
}

/// Every `usersvc` replica of `plan`, in start order: stores, caches, gateways. Each names
/// every replica of its next hop.
fn usersvc_processes(plan: &Plan) -> Vec<ProcessSpec> {
    let published = Ports {
        gateway: plan.gateway_port,
        http: plan.http_port,
        cache: plan.cache_port,
        store: plan.store_port,
    };
    let store_addr = plan.store_addrs();
    let cache_addr = plan.cache_addrs();
    let mut specs = Vec::new();
    for service in Service::SCALABLE {
        for replica in 1..=plan.replicas().of(service) {
            let index = usize::from(replica - 1);
            let mut listen = published;
            match service {
                Service::Store => listen.store = plan.stores[index],
                Service::Cache => listen.cache = plan.caches[index],
                _ => {
                    listen.gateway = plan.gateways[index].grpc;
                    listen.http = plan.gateways[index].http;
                }
            }
            let wiring = Wiring {
                bind: "127.0.0.1",
                listen,
                store_addr: store_addr.clone(),
                cache_addr: cache_addr.clone(),
                database_url: Secret::Value(plan.database_url.clone()),
                redis_url: Secret::Value(plan.redis_url()),
                signing_keys_file: plan.signing_keys.display().to_string(),
                tls_dir: plan.tls_dir.display().to_string(),
                cors_origins: &plan.cors_origins,
                token_ttl: plan.token_ttl(),
            };
            if let Some(launch) = launch::launch(&wiring, service) {
                specs.push(ProcessSpec {
                    service,
                    replica,
                    program: plan.usersvc.clone(),
                    args: launch.args,
                    env: launch.env,
                });
            }
        }
    }
    specs
}

/// HAProxy in front of the gateways, with its configuration written; none with one gateway.
/// Master-worker mode in the foreground (`-W -db`): the master stays this process's child,
/// and SIGUSR2 makes it load the configuration again and hand the listening sockets to a new
/// worker, so a reload refuses no connection.
fn proxy_process(plan: &Plan, dir: &Path) -> Result<Option<ProcessSpec>> {
    let Some(config) = proxy::config(plan, dir) else {
        return Ok(None);
    };
    let path = plan::proxy_config_path(dir);
    write_if_changed(&path, &config)?;
    Ok(Some(ProcessSpec {
        service: Service::Proxy,
        replica: 1,
        program: plan.haproxy.clone().unwrap_or_else(|| "haproxy".into()),
        args: vec![
            "-W".into(),
            "-db".into(),
            "-f".into(),
            path.display().to_string(),
        ],
        env: Vec::new(),
    }))
}

/// Writes `text` to `path` unless it holds it already; whether it wrote.
fn write_if_changed(path: &Path, text: &str) -> Result<bool> {
    if fs::read_to_string(path).is_ok_and(|current| current == text) {
        return Ok(false);
    }
    crate::home::write_private(path, text.as_bytes())?;
    Ok(true)
}

/// A process kept running by its own task.
struct Running {
    spec: ProcessSpec,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The processes of the plan it runs.
struct Supervisor {
    home: ProjectHome,
    dir: PathBuf,
    state: SharedState,
    running: Vec<Running>,
    plan: Plan,
}

impl Supervisor {
    fn start(&mut self, spec: ProcessSpec) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_running(
            spec.clone(),
            stop.clone(),
            self.state.clone(),
            self.dir.clone(),
        ));
        self.running.push(Running { spec, stop, task });
    }

    fn spec(&self, service: Service, replica: u16) -> Option<&ProcessSpec> {
        self.running
            .iter()
            .map(|running| &running.spec)
            .find(|spec| spec.service == service && spec.replica == replica)
    }

    /// Stops one process (SIGTERM: it drains) and forgets it.
    async fn stop(&mut self, service: Service, replica: u16) {
        let Some(index) = self
            .running
            .iter()
            .position(|running| running.spec.service == service && running.spec.replica == replica)
        else {
            return;
        };
        let running = self.running.remove(index);
        running.stop.cancel();
        let _ = running.task.await;
        forget(&self.state, &self.dir, service, replica);
    }

    /// Stops everything in reverse start order (the proxy and gateways first, so that what
    /// they still have in flight finds the cache and store up); replicas of one service drain
    /// side by side.
    async fn stop_all(&mut self) {
        for service in Service::ALL.into_iter().rev() {
            let (these, others) = std::mem::take(&mut self.running)
                .into_iter()
                .partition(|running| running.spec.service == service);
            self.running = others;
            future::join_all(these.into_iter().map(|running: Running| async move {
                running.stop.cancel();
                let _ = running.task.await;
            }))
            .await;
        }
    }

    /// Converges to the plan `up` saved, and reports how it went for `up` to read.
    async fn converge_to_saved_plan(&mut self) {
        let (generation, result) = match Plan::load(&self.dir) {
            Ok(Some(plan)) => (plan.generation, self.converge(plan).await),
            Ok(None) => return,
            Err(err) => (self.plan.generation + 1, Err(err.to_string())),
        };
        let mut state = lock_state(&self.state);
        state.applied = generation;
        state.error = result.err();
        state.phase = None;
        drop(state);
        save(&self.state, &self.dir);
    }

    /// Converges from the plan it runs to `new`; the error says what had changed by then.
    async fn converge(&mut self, new: Plan) -> std::result::Result<(), String> {
        let wanted = usersvc_processes(&new);
        let mut changed = Vec::new();

        // New replicas first: nothing else changes until they serve.
        let added: Vec<ProcessSpec> = wanted
            .iter()
            .filter(|spec| self.spec(spec.service, spec.replica).is_none())
            .cloned()
            .collect();
        for spec in &added {
            self.phase(&format!("starting {}", spec.label()));
            self.start(spec.clone());
        }
        if let Err(err) = self.wait_serving(&new, &added).await {
            for spec in added.iter().rev() {
                self.stop(spec.service, spec.replica).await;
            }
            return Err(format!(
                "{err}; stopped the replicas it had started: the stack runs as before"
            ));
        }
        if !added.is_empty() {
            changed.push(format!("started {}", labels(&added)));
        }
        let outcome = self.rewire(&new, &wanted, &mut changed).await;
        if let Err(err) = outcome {
            let done = if changed.is_empty() {
                "nothing".to_owned()
            } else {
                changed.join(", ")
            };
            return Err(format!("{err} (by then it had {done})"));
        }
        self.plan = new;
        Ok(())
    }

    /// After the new replicas serve: restarts the replicas whose command changed, moves the
    /// proxy, and stops the replicas that go away. Appends each step to `changed`.
    async fn rewire(
        &mut self,
        new: &Plan,
        wanted: &[ProcessSpec],
        changed: &mut Vec<String>,
    ) -> std::result::Result<(), String> {
        let had_proxy = self.plan.has_proxy();
        if had_proxy && !new.has_proxy() {
            // Back to one gateway, which takes the published ports again: a brief interruption.
            self.phase("stopping the proxy");
            self.stop(Service::Proxy, 1).await;
            changed.push("stopped the proxy".to_owned());
        }
        let stale: Vec<ProcessSpec> = wanted
            .iter()
            .filter(|spec| {
                self.spec(spec.service, spec.replica)
                    .is_some_and(|current| current != *spec)
            })
            .cloned()
            .collect();
        let proxy_appears = new.has_proxy() && !had_proxy;
        // Gateways leaving the published ports to the proxy stop before it starts; the others
        // restart one at a time.
        let (moving, rolling): (Vec<_>, Vec<_>) = stale
            .into_iter()
            .partition(|spec| proxy_appears && spec.service == Service::Gateway);
        for spec in rolling {
            self.phase(&format!("restarting {}", spec.label()));
            self.replace(new, spec.clone()).await?;
            changed.push(format!("restarted {}", spec.label()));
        }
        if proxy_appears {
            self.phase("moving the published gateway ports to the proxy");
            for spec in &moving {
                self.stop(spec.service, spec.replica).await;
            }
            let proxy = proxy_process(new, &self.dir).map_err(|err| err.to_string())?;
            let proxy: Vec<ProcessSpec> = proxy.into_iter().collect();
            for spec in moving.iter().chain(&proxy) {
                self.start(spec.clone());
            }
            let started: Vec<ProcessSpec> = moving.iter().chain(&proxy).cloned().collect();
            self.wait_serving(new, &started).await?;
            changed.push(format!("restarted {} behind the proxy", labels(&moving)));
        } else if new.has_proxy() {
            self.update_proxy(new).await?;
        }
        let mut gone: Vec<(Service, u16)> = self
            .running
            .iter()
            .map(|running| (running.spec.service, running.spec.replica))
            .filter(|(service, replica)| {
                service.is_usersvc()
                    && !wanted
                        .iter()
                        .any(|spec| spec.service == *service && spec.replica == *replica)
            })
            .collect();
        // The front first (gateways before caches before stores), the highest replica first.
        gone.sort_by_key(|(service, replica)| std::cmp::Reverse((rank(*service), *replica)));
        for (service, replica) in gone {
            self.phase(&format!("stopping {}", label(service, replica)));
            self.stop(service, replica).await;
            changed.push(format!("stopped {}", label(service, replica)));
        }
        if had_proxy && new.has_proxy() {
            proxy::forget(&self.dir, new.gateways.len(), self.plan.gateways.len()).await;
        }
        Ok(())
    }

    /// Restarts one replica with its new command: it drains, the new one starts and serves,
    /// then has [`FOUND_AFTER`] to be found by its clients before anything else stops.
    async fn replace(&mut self, plan: &Plan, spec: ProcessSpec) -> std::result::Result<(), String> {
        self.stop(spec.service, spec.replica).await;
        self.start(spec.clone());
        self.wait_serving(plan, std::slice::from_ref(&spec)).await?;
        tokio::time::sleep(FOUND_AFTER).await;
        Ok(())
    }

    /// Gives the proxy the gateways of `plan`: rewrites its configuration (read when it
    /// starts) and changes its servers in place through its runtime API; when that fails,
    /// has it reload the configuration instead.
    async fn update_proxy(&mut self, plan: &Plan) -> std::result::Result<(), String> {
        let Some(config) = proxy::config(plan, &self.dir) else {
            return Ok(());
        };
        let path = plan::proxy_config_path(&self.dir);
        if !write_if_changed(&path, &config).map_err(|err| err.to_string())? {
            return Ok(());
        }
        self.phase("giving the proxy its gateways");
        match proxy::apply(&self.dir, &self.plan.gateways, &plan.gateways).await {
            Ok(()) => Ok(()),
            Err(err) => {
                let log = plan::log_path(&self.dir, Service::Proxy, 1);
                append_log(
                    &log,
                    &format!("userctl: {err}; reloading the proxy instead"),
                );
                self.reload_proxy(plan).await
            }
        }
    }

    /// Has the proxy load its configuration again (SIGUSR2 to its master, which hands the
    /// listening sockets to a new worker), then gives the old worker's clients
    /// [`FOUND_AFTER`] to move to the new one.
    async fn reload_proxy(&mut self, plan: &Plan) -> std::result::Result<(), String> {
        self.phase("reloading the proxy");
        let pid = lock_state(&self.state)
            .process(Service::Proxy, 1)
            .and_then(|process| process.pid);
        // A proxy restarting after a crash reads the new configuration when it starts.
        if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGUSR2);
        }
        self.wait_serving(plan, &[]).await?;
        tokio::time::sleep(FOUND_AFTER).await;
        Ok(())
    }

    /// Waits until each of `specs` (and the proxy, when `plan` has one) answers its health
    /// check, within the plan's wait timeout; fails when one keeps exiting.
    async fn wait_serving(
        &self,
        plan: &Plan,
        specs: &[ProcessSpec],
    ) -> std::result::Result<(), String> {
        let deadline = Instant::now() + plan.wait_timeout();
        let mut waiting: Vec<(Service, u16)> = specs
            .iter()
            .map(|spec| (spec.service, spec.replica))
            .collect();
        if plan.has_proxy() {
            waiting.push((Service::Proxy, 1));
        }
        while let Some(&(service, replica)) = waiting.first() {
            let serving = match plan.address(service, replica) {
                Some(addr) => probe::serving(&self.home, service, &addr).await,
                None => true,
            };
            // An answer that came after the deadline is too late: on a busy machine a probe
            // can outlast a short wait, and "healthy within" must mean within.
            if serving && Instant::now() <= deadline {
                waiting.remove(0);
                continue;
            }
            let restarts = lock_state(&self.state)
                .process(service, replica)
                .map_or(0, |process| process.restarts);
            if restarts >= GIVE_UP_AFTER_RESTARTS {
                return Err(format!(
                    "{} exited {restarts} times while starting (see `userctl logs {service}`)",
                    label(service, replica)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not become healthy within {:?} (see `userctl logs {service}`)",
                    label(service, replica),
                    plan.wait_timeout()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    fn phase(&self, phase: &str) {
        lock_state(&self.state).phase = Some(phase.to_owned());
        save(&self.state, &self.dir);
    }
}

fn labels(specs: &[ProcessSpec]) -> String {
    specs
        .iter()
        .map(ProcessSpec::label)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Start order of a service.
fn rank(service: Service) -> usize {
    Service::ALL
        .iter()
        .position(|other| *other == service)
        .unwrap_or(0)
}

/// Runs `spec` until `stop`, starting it again whenever it exits: at once after a drain it
/// was asked for, else with exponential backoff.
async fn keep_running(
    spec: ProcessSpec,
    stop: CancellationToken,
    state: SharedState,
    dir: PathBuf,
) {
    let new_backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    let mut restarts = 0;
    let log = plan::log_path(&dir, spec.service, spec.replica);
    let name = spec.label();
    loop {
        let started = Instant::now();
        let mut drained = false;
        match spawn(&spec, &log) {
            Ok(mut child) => {
                update(&state, &dir, &spec, child.id(), State::Running, restarts);
                tokio::select! {
                    status = child.wait() => {
                        drained = was_drained(status.as_ref().ok().copied(), started.elapsed());
                        let what = if drained { "drained and exited; starting it again" } else { "exited; restarting" };
                        append_log(&log, &format!("userctl: {name} {what} ({status:?})"));
                    }
                    _ = stop.cancelled() => {
                        terminate(&mut child).await;
                        break;
                    }
                }
            }
            Err(err) => append_log(
                &log,
                &format!("userctl: cannot start {}: {err}", spec.program.display()),
            ),
        }
        if drained {
            continue;
        }
        if started.elapsed() > STABLE_AFTER {
            backoff = new_backoff();
        }
        restarts += 1;
        update(&state, &dir, &spec, None, State::Restarting, restarts);
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => break,
        }
    }
    update(&state, &dir, &spec, None, State::Stopped, restarts);
}

/// Whether an exit was a drain someone asked for: a clean exit after running long enough to
/// have drained.
fn was_drained(status: Option<ExitStatus>, ran: Duration) -> bool {
    status.is_some_and(|status| status.success()) && ran >= DRAINED_AFTER
}

fn spawn(spec: &ProcessSpec, log_path: &Path) -> std::io::Result<Child> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let log2 = log.try_clone()?;
    Command::new(&spec.program)
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        .spawn()
}

/// SIGTERM, then up to [`DRAIN_TIMEOUT`] to drain, then SIGKILL.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn lock_state(state: &SharedState) -> std::sync::MutexGuard<'_, SupervisorState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn update(
    state: &SharedState,
    dir: &Path,
    spec: &ProcessSpec,
    pid: Option<u32>,
    status: State,
    restarts: u64,
) {
    {
        let mut state = lock_state(state);
        let entry = ProcessState {
            service: spec.service,
            replica: spec.replica,
            pid,
            state: status,
            restarts,
            started_at: now_secs(),
        };
        match state
            .services
            .iter_mut()
            .find(|process| process.service == spec.service && process.replica == spec.replica)
        {
            Some(existing) => {
                if status != State::Running {
                    // Keep when the last process started, for uptime.
                    existing.pid = None;
                    existing.state = entry.state;
                    existing.restarts = restarts;
                } else {
                    *existing = entry;
                }
            }
            None => state.services.push(entry),
        }
    }
    save(state, dir);
}

/// Drops a replica that is gone for good from the state.
fn forget(state: &SharedState, dir: &Path, service: Service, replica: u16) {
    lock_state(state)
        .services
        .retain(|process| !(process.service == service && process.replica == replica));
    save(state, dir);
}

/// Writes the state while holding its lock: each process's task saves after its own update,
/// and a snapshot written outside the lock could land after a newer one and lose an entry.
fn save(state: &SharedState, dir: &Path) {
    let state = lock_state(state);
    if let Err(err) = state.save(dir) {
        eprintln!("userctl supervise: {err}");
    }
}

fn append_log(path: &Path, line: &str) {
    use std::io::Write as _;
    if let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

fn on_signal() -> Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|err| RuntimeError::other("handling SIGTERM", err))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|err| RuntimeError::other("handling SIGINT", err))?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        cancel.cancel();
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{runtime::local::plan::GatewayPorts, stack::Replicas};

    fn plan(replicas: Replicas) -> Plan {
        let mut next = 40_000;
        let plan = Plan {
            gateways: vec![GatewayPorts {
                grpc: 50051,
                http: 8080,
            }],
            ..plan::sample()
        };
        plan.with_replicas(replicas, &mut |_| {
            next += 1;
            Ok(next)
        })
        .expect("plan")
    }

    /// The replicas whose command differs between `old` and `new`, and those only in `new`.
    fn diff(old: &Plan, new: &Plan) -> (Vec<String>, Vec<String>) {
        let before = usersvc_processes(old);
        let mut changed = Vec::new();
        let mut added = Vec::new();
        for spec in usersvc_processes(new) {
            match before
                .iter()
                .find(|b| b.service == spec.service && b.replica == spec.replica)
            {
                Some(old) if *old != spec => changed.push(spec.label()),
                Some(_) => {}
                None => added.push(spec.label()),
            }
        }
        (changed, added)
    }

    fn replicas(gateway: u16, cache: u16, store: u16) -> Replicas {
        Replicas {
            gateway,
            cache,
            store,
        }
    }

    #[test]
    fn scaling_a_service_restarts_only_the_hop_before_it() {
        let two = plan(replicas(2, 2, 2));
        let mut three = two.clone();
        three.caches.push(45_000);
        let (changed, added) = diff(&two, &three);
        assert_eq!(
            changed,
            ["gateway.1", "gateway.2"],
            "the gateways name every cache"
        );
        assert_eq!(added, ["cache.3"]);

        let mut stores = two.clone();
        stores.stores.push(45_001);
        let (changed, added) = diff(&two, &stores);
        assert_eq!(changed, ["cache.1", "cache.2"]);
        assert_eq!(added, ["store.3"]);

        let mut gateways = two.clone();
        gateways.gateways.push(GatewayPorts {
            grpc: 45_002,
            http: 45_003,
        });
        let (changed, added) = diff(&two, &gateways);
        assert!(
            changed.is_empty(),
            "more gateways restart nothing: {changed:?}"
        );
        assert_eq!(added, ["gateway.3"]);
    }

    #[test]
    fn each_replica_listens_on_its_own_port_and_names_every_replica_of_its_next_hop() {
        let plan = plan(replicas(2, 2, 1));
        let specs = usersvc_processes(&plan);
        let env = |label: &str, key: &str| {
            specs
                .iter()
                .find(|spec| spec.label() == label)
                .and_then(|spec| spec.env.iter().find(|(k, _)| *k == key))
                .map(|(_, value)| value.clone())
                .unwrap_or_default()
        };
        assert_eq!(env("cache.1", "USERSVC_LISTEN"), "127.0.0.1:50052");
        assert_ne!(env("cache.2", "USERSVC_LISTEN"), "127.0.0.1:50052");
        assert_eq!(env("gateway.1", "USERSVC_CACHE_ADDR"), plan.cache_addrs());
        assert!(plan.cache_addrs().contains(','), "{}", plan.cache_addrs());
        assert_ne!(
            env("gateway.1", "USERSVC_LISTEN"),
            "127.0.0.1:50051",
            "the proxy holds the published port"
        );
        assert_eq!(
            env("cache.2", "USERSVC_STORE_ADDR"),
            "http://127.0.0.1:50053"
        );
    }

    #[test]
    fn only_a_clean_exit_after_a_drain_restarts_at_once() {
        use std::os::unix::process::ExitStatusExt as _;
        let clean = ExitStatus::from_raw(0);
        let failed = ExitStatus::from_raw(1 << 8);
        assert!(was_drained(Some(clean), Duration::from_secs(2)));
        assert!(!was_drained(Some(clean), Duration::from_millis(100)));
        assert!(!was_drained(Some(failed), Duration::from_secs(2)));
        assert!(!was_drained(None, Duration::from_secs(2)));
    }
}
