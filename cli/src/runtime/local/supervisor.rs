//! `userctl supervise`: the local runtime's supervisor. Starts Redis (unless external), the
//! store, the cache and the gateway; restarts any that exits, with backoff; on SIGTERM stops
//! them in reverse order, each draining its in-flight requests, then exits.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use backon::{BackoffBuilder as _, ExponentialBuilder};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::{
    now_secs,
    plan::{self, Plan, ProcessState, RedisPlan, SupervisorState},
};
use crate::{
    home::ProjectHome,
    runtime::{
        RuntimeError,
        launch::{self, Wiring},
    },
    stack::{Ports, Service, State, loopback_url},
};

type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// How long a service gets to drain after SIGTERM before it is killed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(12);
/// A process that ran this long before exiting restarts without the accumulated backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// One process to keep running.
struct ProcessSpec {
    service: Service,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
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
    }));
    save(&state, &dir);
    let shutdown = on_signal()?;

    let mut running = Vec::new();
    for spec in processes(&plan, &dir)? {
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_running(spec, stop.clone(), state.clone(), dir.clone()));
        running.push((stop, task));
    }
    shutdown.cancelled().await;
    // The gateway first, so that what it still has in flight finds the cache and store up.
    for (stop, task) in running.into_iter().rev() {
        stop.cancel();
        let _ = task.await;
    }
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

/// The processes of `plan`, in start order.
fn processes(plan: &Plan, dir: &Path) -> Result<Vec<ProcessSpec>> {
    let mut specs = Vec::new();
    if let RedisPlan::Spawn { port, password } = &plan.redis {
        // The password goes in a 0600 file, not on the command line where `ps` shows it.
        let conf = dir.join("redis.conf");
        let text = format!(
            "bind 127.0.0.1\nport {port}\nrequirepass {password}\nsave \"\"\nappendonly no\ndir {}\n",
            dir.display()
        );
        crate::home::write_private(&conf, text.as_bytes())?;
        specs.push(ProcessSpec {
            service: Service::Redis,
            program: "redis-server".into(),
            args: vec![conf.display().to_string()],
            env: Vec::new(),
        });
    }
    let wiring = Wiring {
        bind: "127.0.0.1",
        listen: Ports {
            gateway: plan.gateway_port,
            http: plan.http_port,
            cache: plan.cache_port,
            store: plan.store_port,
        },
        store_addr: loopback_url(plan.store_port),
        cache_addr: loopback_url(plan.cache_port),
        database_url: plan.database_url.clone(),
        redis_url: plan.redis_url(),
        jwt_key_file: plan.jwt_key.display().to_string(),
        tls_dir: plan.tls_dir.display().to_string(),
        cors_origins: &plan.cors_origins,
    };
    specs.extend(launch::all(&wiring).into_iter().map(|launch| ProcessSpec {
        service: launch.service,
        program: plan.usersvc.clone(),
        args: launch.args,
        env: launch.env,
    }));
    Ok(specs)
}

/// Runs `spec` until `stop`, restarting it with exponential backoff whenever it exits.
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
    loop {
        let started = Instant::now();
        match spawn(&spec, &dir) {
            Ok(mut child) => {
                update(
                    &state,
                    &dir,
                    spec.service,
                    child.id(),
                    State::Running,
                    restarts,
                );
                tokio::select! {
                    status = child.wait() => {
                        append_log(&dir, spec.service, &format!("userctl: {} exited ({status:?}); restarting", spec.service.name()));
                    }
                    _ = stop.cancelled() => {
                        terminate(&mut child).await;
                        break;
                    }
                }
            }
            Err(err) => append_log(
                &dir,
                spec.service,
                &format!("userctl: cannot start {}: {err}", spec.program.display()),
            ),
        }
        if started.elapsed() > STABLE_AFTER {
            backoff = new_backoff();
        }
        restarts += 1;
        update(
            &state,
            &dir,
            spec.service,
            None,
            State::Restarting,
            restarts,
        );
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => break,
        }
    }
    update(&state, &dir, spec.service, None, State::Stopped, restarts);
}

fn spawn(spec: &ProcessSpec, dir: &Path) -> std::io::Result<Child> {
    let log_path = plan::log_path(dir, spec.service);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
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

fn update(
    state: &SharedState,
    dir: &Path,
    service: Service,
    pid: Option<u32>,
    status: State,
    restarts: u64,
) {
    {
        let mut state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = ProcessState {
            service,
            pid,
            state: status,
            restarts,
            started_at: now_secs(),
        };
        match state
            .services
            .iter_mut()
            .find(|process| process.service == service)
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

/// Writes the state while holding its lock: each process's task saves after its own update,
/// and a snapshot written outside the lock could land after a newer one and lose an entry.
fn save(state: &SharedState, dir: &Path) {
    let state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(err) = state.save(dir) {
        eprintln!("userctl supervise: {err}");
    }
}

fn append_log(dir: &Path, service: Service, line: &str) {
    use std::io::Write as _;
    if let Ok(mut file) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(plan::log_path(dir, service))
    {
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
