//! `up`, `down`, `status`, `logs`, `scale`, `restart`: running the stack.

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use crate::{
    args::{
        DownArgs, LogsArgs, OutputArgs, OutputFormat, ReplicaChanges, RestartArgs, ScaleArgs,
        StackArgs, UpArgs,
    },
    config::{Origin, StackConfig},
    error::{CliError, Result},
    home::ProjectHome,
    output::{self, Color},
    runtime::{
        Endpoints, Runtime, StackSpec, local::LocalRuntime, progress::Progress, swarm::SwarmRuntime,
    },
    stack::{Health, LogLine, Replicas, RuntimeKind, Service, ServiceStatus, State},
};

pub async fn up(home: &ProjectHome, file: Option<&Path>, args: UpArgs) -> Result<()> {
    let Converged {
        runtime, endpoints, ..
    } = converge(home, file, &args.stack, args.init_swarm).await?;
    println!(
        "stack {} is up on the {} runtime",
        home.name,
        runtime.kind().name()
    );
    println!("gateway  {}", endpoints.gateway);
    if let Some(http) = &endpoints.http {
        println!("http     {http}");
        println!("jwks     {}", jwks_url(http));
    }
    Ok(())
}

/// `up` again on the running stack, with what it was brought up with: how a changed key set
/// reaches its gateways. Returns the runtime it runs on.
pub(crate) async fn converge_recorded(home: &ProjectHome, file: Option<&Path>) -> Result<Runtime> {
    let Some(recorded) = home.stack()? else {
        return Err(not_up(home));
    };
    let flags = StackArgs {
        runtime: Some(recorded.runtime.choice()),
        ..StackArgs::default()
    };
    Ok(converge(home, file, &flags, false).await?.runtime)
}

/// `up` with new replica counts: the running stack converges to them, and nothing else changes.
pub async fn scale(home: &ProjectHome, file: Option<&Path>, args: ScaleArgs) -> Result<()> {
    let Some(recorded) = home.stack()? else {
        return Err(not_up(home));
    };
    let flags = StackArgs {
        runtime: Some(recorded.runtime.choice()),
        replicas: Some(ReplicaChanges(args.changes)),
        ..StackArgs::default()
    };
    let converged = converge(home, file, &flags, false).await?;
    println!("stack {} runs {}", home.name, converged.replicas);
    Ok(())
}

/// A rolling restart of one service's replicas.
pub async fn restart(home: &ProjectHome, args: RestartArgs) -> Result<()> {
    let service = Service::parse(&args.service)
        .filter(|service| Service::SCALABLE.contains(service))
        .ok_or_else(|| {
            CliError::usage(format!("cannot restart {:?}", args.service))
                .with_hint("use gateway, cache or store")
        })?;
    if home.stack()?.is_none() {
        return Err(not_up(home));
    }
    let runtime = existing_runtime(home).await?;
    let running = runtime
        .status()
        .await?
        .iter()
        .filter(|status| status.service == service && status.state == State::Running)
        .count();
    if running == 0 {
        return Err(
            CliError::usage(format!("{service} is not running in project {}", home.name))
                .with_hint("see `userctl status`; `userctl up` starts it"),
        );
    }
    runtime.restart(service, &Progress::new()).await?;
    println!(
        "restarted {running} {service} replica{}, one at a time",
        if running == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Exit 4: there is no stack of this project to act on.
pub(crate) fn not_up(home: &ProjectHome) -> CliError {
    CliError::unreachable(format!("project {} is not up", home.name))
        .with_hint("run `userctl up` first")
}

/// A stack as `converge` left it.
struct Converged {
    runtime: Runtime,
    endpoints: Endpoints,
    replicas: Replicas,
}

/// Brings the stack `flags` and the other layers describe up (or to its new shape), and records
/// it for the commands after. `init_swarm`: the swarm runtime may make this engine a
/// single-node swarm.
async fn converge(
    home: &ProjectHome,
    file: Option<&Path>,
    flags: &StackArgs,
    init_swarm: bool,
) -> Result<Converged> {
    let config = StackConfig::resolve(home, file, flags)?;
    let recorded = home.stack()?;
    let chosen = Runtime::choose(
        home,
        config.runtime,
        recorded.as_ref().map(|stack| stack.runtime),
    )
    .await?;
    let runtime = chosen.runtime;
    if let Some(reason) = &chosen.reason {
        eprintln!("using the {} runtime ({reason})", runtime.kind().name());
    }
    if let Some(recorded) = &recorded
        && recorded.runtime != runtime.kind()
    {
        return Err(CliError::usage(format!(
            "project {} is already up on the {} runtime",
            home.name,
            recorded.runtime.name()
        ))
        .with_hint("run `userctl down` first, or use another --project"));
    }
    let store = config.store.unwrap_or(runtime.kind().default_store());
    let spec = StackSpec {
        home: home.clone(),
        store,
        ports: config.ports,
        replicas: config.replicas,
        wait_timeout: config.wait_timeout,
        token_ttl: config.token_ttl,
        usersvc: locate_usersvc(config.usersvc.clone(), &config.origin("usersvc"))?,
        redis_image: config.redis_image.clone(),
        postgres_image: config.postgres_image.clone(),
        proxy_image: config.proxy_image.clone(),
        redis_url: config.redis_url.clone(),
        cors_origins: config.cors_origins.clone(),
        init_swarm,
        image_registry: config.image_registry.clone(),
    };

    let progress = Progress::new();
    let endpoints = runtime.up(&spec, &progress).await?;
    runtime.record(home, store, &endpoints)?;
    config.record(home, runtime.kind(), store)?;
    Ok(Converged {
        runtime,
        endpoints,
        replicas: config.replicas,
    })
}

pub async fn down(home: &ProjectHome, args: DownArgs) -> Result<()> {
    let recorded = home.stack()?;
    let runtime = existing_runtime(home).await?;
    let mut deleted = runtime.down(args.volumes).await?;
    home.forget_stack()?;
    if !args.volumes {
        println!(
            "stack {} is down; its data is kept (`down --volumes` deletes it)",
            home.name
        );
        return Ok(());
    }
    if recorded.is_none() {
        // With no record (a stack already brought down), the data may be on either runtime.
        // Auto picks Docker when an engine answers, so also wipe what a local stack left; when
        // it picked local, no engine answered and Docker volumes cannot be reached.
        match runtime.kind() {
            RuntimeKind::Docker | RuntimeKind::Swarm => {
                deleted.extend(LocalRuntime::new(home.clone()).down(true).await?);
                // And what a swarm stack of this project left, when the engine manages one.
                deleted.extend(SwarmRuntime::connect(&home.name).await?.down(true).await?);
            }
            RuntimeKind::Local => eprintln!(
                "no Docker engine answered: Docker volumes of project {}, if any, are kept",
                home.name
            ),
        }
    }
    // The data these protected is gone; the next `up` generates fresh ones.
    if home.forget_secrets()? {
        deleted.push("the generated passwords".to_owned());
    }
    if home.forget_signing_keys()? {
        deleted.push("the token signing keys (tokens issued before no longer verify)".to_owned());
    }
    if home.forget_tls()? {
        deleted.push(format!(
            "the stack's CA and certificates in {} (the next up makes new ones)",
            home.tls_dir().display()
        ));
    }
    if deleted.is_empty() {
        println!("stack {} is down; it had no data to delete", home.name);
    } else {
        println!(
            "stack {} is down; deleted {}",
            home.name,
            deleted.join(", ")
        );
    }
    Ok(())
}

pub async fn status(home: &ProjectHome, args: OutputArgs) -> Result<()> {
    let runtime = existing_runtime(home).await?;
    let statuses = runtime.status().await?;
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&statuses)
                .map_err(|err| CliError::failed(err.to_string()))?;
            println!("{json}");
        }
        OutputFormat::Table => {
            print!("{}", status_table(&statuses));
            if let Some(http) = home.stack()?.and_then(|stack| stack.http) {
                println!("\njwks  {}", jwks_url(&http));
            }
        }
    }
    Ok(())
}

/// Where the gateways publish the keys that verify their tokens.
fn jwks_url(http: &str) -> String {
    format!("{}/.well-known/jwks.json", http.trim_end_matches('/'))
}

pub async fn logs(home: &ProjectHome, args: LogsArgs) -> Result<()> {
    let service = match args.service.as_deref() {
        None => None,
        Some(name) => Some(Service::parse(name).ok_or_else(|| {
            CliError::usage(format!("unknown service {name:?}"))
                .with_hint("use gateway, cache, store, redis, postgres or proxy")
        })?),
    };
    let runtime = existing_runtime(home).await?;
    let mut stdout = io::stdout();
    let Some(trace) = args.trace else {
        let mut print = |line| {
            writeln!(stdout, "{line}")?;
            stdout.flush()
        };
        return Ok(runtime
            .logs(service, args.follow, args.tail, &mut print)
            .await?);
    };
    // Every line a service logs while serving a request carries its trace id
    // (docs/design.md, "Tracing a request").
    let mut lines = Vec::new();
    let mut keep = |line: LogLine| {
        if !line.text.contains(&trace) {
            return Ok(());
        }
        if args.follow {
            writeln!(stdout, "{line}")?;
            stdout.flush()
        } else {
            lines.push(line);
            Ok(())
        }
    };
    runtime
        .logs(service, args.follow, args.tail, &mut keep)
        .await?;
    if !args.follow {
        if lines.is_empty() {
            return Err(
                CliError::failed(format!("no service has logged trace {trace}")).with_hint(
                    "take the id from a response's traceparent header; \
                     a trace lasts as long as the services' logs",
                ),
            );
        }
        // The services' clocks are one machine's (or one cluster's, kept in step): their
        // RFC 3339 UTC timestamps order the request's hops.
        lines.sort_by(|a, b| a.timestamp().cmp(&b.timestamp()));
        for line in lines {
            // A reader that went away (`| head`) has what it wanted.
            if writeln!(stdout, "{line}").is_err() {
                break;
            }
        }
    }
    Ok(())
}

/// The status table; on swarm, with the node each task runs on.
fn status_table(statuses: &[ServiceStatus]) -> String {
    let with_nodes = statuses.iter().any(|status| status.node.is_some());
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|status| {
            let state_color = match status.state {
                State::Running => Color::Green,
                State::External | State::Unused => Color::Yellow,
                _ => Color::Red,
            };
            let health_color = match status.health {
                Health::Healthy => Color::Green,
                Health::Starting | Health::None => Color::Yellow,
                Health::Unhealthy => Color::Red,
            };
            let mut row = vec![
                status.service.name().to_owned(),
                status.replica.to_string(),
                status
                    .id
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), short_id),
                output::paint(status.state.name(), state_color),
                output::paint(status.health.name(), health_color),
                status.address.clone().unwrap_or_else(|| "-".into()),
            ];
            if with_nodes {
                row.push(status.node.clone().unwrap_or_else(|| "-".into()));
            }
            row
        })
        .collect();
    let mut headers = vec!["service", "replica", "id", "state", "health", "address"];
    if with_nodes {
        headers.push("node");
    }
    output::table(&headers, &rows)
}

/// A container id as `docker ps` shows it (12 characters); a pid whole.
fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// The runtime of the recorded stack (or, with none, whichever finds it).
pub(crate) async fn existing_runtime(home: &ProjectHome) -> Result<Runtime> {
    Ok(Runtime::reopen(home).await?)
}

/// `--usersvc`, else `usersvc` beside this executable (as cargo builds and installs them), else
/// on PATH.
/// The `usersvc` binary: as configured (`from` names where that setting came from, for the
/// error), else beside this executable, else on PATH.
pub(crate) fn locate_usersvc(configured: Option<PathBuf>, from: &Origin) -> Result<PathBuf> {
    let hint = "build it with `cargo build --release -p usersvc`, or pass --usersvc PATH";
    if let Some(path) = configured {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(CliError::usage(format!(
                "usersvc {} (from {from}) is not a file",
                path.display()
            ))
            .with_hint(hint))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("usersvc")));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("usersvc"));
    beside
        .into_iter()
        .chain(on_path)
        .find(|path| Path::is_file(path))
        .ok_or_else(|| CliError::failed("cannot find the usersvc binary").with_hint(hint))
}
