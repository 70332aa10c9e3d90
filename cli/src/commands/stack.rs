//! `up`, `down`, `status`, `logs`: running the stack.

use std::path::{Path, PathBuf};

use crate::{
    args::{DownArgs, LogsArgs, OutputArgs, OutputFormat, RuntimeChoice, StoreKind, UpArgs},
    config::StackConfig,
    error::{CliError, Result},
    home::{ProjectHome, RuntimeKind, StackRecord},
    output::{self, Color},
    runtime::{
        DEFAULT_POSTGRES_IMAGE, DEFAULT_REDIS_IMAGE, Runtime, RuntimeError, Service, ServiceStatus,
        StackSpec, docker::DockerRuntime, local::LocalRuntime, progress::Progress,
    },
};

pub async fn up(home: &ProjectHome, file: Option<&Path>, args: UpArgs) -> Result<()> {
    let config = StackConfig::resolve(home, file, &args.stack)?;
    let recorded = home.stack()?;
    let runtime = choose_runtime(home, config.runtime, recorded.as_ref()).await?;
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
    let store = config.store.unwrap_or(match runtime.kind() {
        RuntimeKind::Docker => StoreKind::Postgres,
        RuntimeKind::Local => StoreKind::Sqlite,
    });
    let spec = StackSpec {
        home: home.clone(),
        store,
        ports: config.ports,
        wait_timeout: config.wait_timeout,
        usersvc: locate_usersvc(config.usersvc.clone())?,
        redis_image: config
            .redis_image
            .clone()
            .unwrap_or_else(|| DEFAULT_REDIS_IMAGE.to_owned()),
        postgres_image: config
            .postgres_image
            .clone()
            .unwrap_or_else(|| DEFAULT_POSTGRES_IMAGE.to_owned()),
        redis_url: config.redis_url.clone(),
        cors_origins: config.cors_origins.clone(),
    };

    let progress = Progress::new();
    let endpoints = runtime.up(&spec, &progress).await.map_err(runtime_error)?;
    home.save_stack(&StackRecord {
        runtime: runtime.kind(),
        store,
        gateway: endpoints.gateway.clone(),
        cache: endpoints.cache.clone(),
        store_addr: endpoints.store.clone(),
        http: endpoints.http.clone(),
    })?;
    config.record(home, runtime.kind(), store)?;
    println!(
        "stack {} is up on the {} runtime",
        home.name,
        runtime.kind().name()
    );
    println!("gateway  {}", endpoints.gateway);
    if let Some(http) = &endpoints.http {
        println!("http     {http}");
    }
    Ok(())
}

pub async fn down(home: &ProjectHome, args: DownArgs) -> Result<()> {
    let runtime = existing_runtime(home).await?;
    runtime.down(args.volumes).await.map_err(runtime_error)?;
    home.forget_stack()?;
    if args.volumes {
        // The data these protected is gone; the next `up` generates fresh ones.
        home.forget_secrets()?;
        println!("stack {} is down; its data was deleted", home.name);
    } else {
        println!(
            "stack {} is down; its data is kept (`down --volumes` deletes it)",
            home.name
        );
    }
    Ok(())
}

pub async fn status(home: &ProjectHome, args: OutputArgs) -> Result<()> {
    let runtime = existing_runtime(home).await?;
    let statuses = runtime.status().await.map_err(runtime_error)?;
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&statuses)
                .map_err(|err| CliError::failed(err.to_string()))?;
            println!("{json}");
        }
        OutputFormat::Table => print!("{}", status_table(&statuses)),
    }
    Ok(())
}

pub async fn logs(home: &ProjectHome, args: LogsArgs) -> Result<()> {
    let service = match args.service.as_deref() {
        None => None,
        Some(name) => Some(Service::parse(name).ok_or_else(|| {
            CliError::usage(format!("unknown service {name:?}"))
                .with_hint("use gateway, cache, store, redis or postgres")
        })?),
    };
    let runtime = existing_runtime(home).await?;
    runtime
        .logs(service, args.follow, args.tail)
        .await
        .map_err(runtime_error)
}

fn status_table(statuses: &[ServiceStatus]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|status| {
            let state_color = if status.state == "running" {
                Color::Green
            } else {
                Color::Red
            };
            let health_color = match status.health.as_str() {
                "healthy" => Color::Green,
                "starting" | "none" => Color::Yellow,
                _ => Color::Red,
            };
            vec![
                status.service.name().to_owned(),
                output::paint(&status.state, state_color),
                output::paint(&status.health, health_color),
                status.address.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(&["service", "state", "health", "address"], &rows)
}

/// The runtime `up` should use: the one asked for; for auto, the recorded stack's, else Docker
/// when an engine answers, else local (saying which).
async fn choose_runtime(
    home: &ProjectHome,
    choice: RuntimeChoice,
    recorded: Option<&StackRecord>,
) -> Result<Runtime> {
    match (choice, recorded.map(|stack| stack.runtime)) {
        (RuntimeChoice::Docker, _) => runtime_for(home, RuntimeKind::Docker).await,
        (RuntimeChoice::Local, _) => runtime_for(home, RuntimeKind::Local).await,
        (RuntimeChoice::Auto, Some(kind)) => runtime_for(home, kind).await,
        (RuntimeChoice::Auto, None) => match DockerRuntime::connect(&home.name).await {
            Ok(docker) => {
                eprintln!("using the docker runtime (a Docker engine answered)");
                Ok(Runtime::Docker(docker))
            }
            Err(err) => {
                eprintln!("using the local runtime ({err})");
                Ok(Runtime::Local(LocalRuntime::new(home.clone())))
            }
        },
    }
}

/// The runtime of the recorded stack; with no record, Docker if an engine answers (its labels
/// still find what a lost record pointed at), else local.
async fn existing_runtime(home: &ProjectHome) -> Result<Runtime> {
    match home.stack()?.map(|stack| stack.runtime) {
        Some(kind) => runtime_for(home, kind).await,
        None => Ok(match DockerRuntime::connect(&home.name).await {
            Ok(docker) => Runtime::Docker(docker),
            Err(_) => Runtime::Local(LocalRuntime::new(home.clone())),
        }),
    }
}

async fn runtime_for(home: &ProjectHome, kind: RuntimeKind) -> Result<Runtime> {
    Ok(match kind {
        RuntimeKind::Docker => Runtime::Docker(
            DockerRuntime::connect(&home.name)
                .await
                .map_err(runtime_error)?,
        ),
        RuntimeKind::Local => Runtime::Local(LocalRuntime::new(home.clone())),
    })
}

/// `--usersvc`, else `usersvc` beside this executable (as cargo builds and installs them), else
/// on PATH.
fn locate_usersvc(flag: Option<PathBuf>) -> Result<PathBuf> {
    let hint = "build it with `cargo build --release -p usersvc`, or pass --usersvc PATH";
    if let Some(path) = flag {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(
                CliError::usage(format!("--usersvc {} is not a file", path.display()))
                    .with_hint(hint),
            )
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

/// What a runtime failure means to the user, with the exit code and a hint.
pub fn runtime_error(err: RuntimeError) -> CliError {
    let message = err.to_string();
    match err {
        RuntimeError::EngineUnreachable(_) => CliError::unreachable(message)
            .with_hint("start Docker (and check you may use its socket), or pass --runtime local"),
        RuntimeError::ImageUnavailable { .. } => CliError::failed(message).with_hint(
            "with no registry, run scripts/build-images and pass --redis-image userctl-local/redis:7 --postgres-image userctl-local/postgres:15",
        ),
        RuntimeError::PortTaken { .. } => {
            CliError::failed(message).with_hint("free the port, or choose another with --gateway-port/--cache-port/--store-port (0: any free port)")
        }
        RuntimeError::Unhealthy { service, .. } | RuntimeError::Exited { service, .. } => {
            CliError::failed(message).with_hint(format!("see `userctl logs {service}`"))
        }
        RuntimeError::Other { .. } => CliError::failed(message),
    }
}
