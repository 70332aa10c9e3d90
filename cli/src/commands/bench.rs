//! `bench`: load the running stack, print the figures and their ratios to same-run baselines.

use std::{io::IsTerminal as _, sync::Arc};

use futures::FutureExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{
    args::{BenchArgs, OutputFormat},
    bench::{self, MemoryProbe, Options, Target, load::Limits},
    client,
    error::{CliError, Result},
    home::ProjectHome,
    pki::Holder,
    runtime::Runtime,
    stack::{Service, ServiceStatus, State},
};

pub async fn run(home: &ProjectHome, gateway: Option<String>, args: BenchArgs) -> Result<()> {
    if args.concurrency == 0 || args.users == 0 {
        return Err(CliError::usage(
            "--concurrency and --users must be at least 1",
        ));
    }
    let record = home.stack()?;
    let gateway_addr = client::gateway_addr(home, gateway)?;
    // The bench measures the stack with or without its runtime: without one it only misses
    // the processes' CPU figures and the Redis baseline.
    let runtime = match &record {
        Some(stack) => Runtime::open(home, stack.runtime).await.ok(),
        None => None,
    };
    let (redis_url, pids) = runtime.as_ref().map_or((None, Vec::new()), |runtime| {
        (runtime.redis_url(), process_names(runtime.processes()))
    });
    let statuses = match &runtime {
        Some(runtime) => runtime.status().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let replicas = Replicas::of_running(&statuses);
    let gateway_memory = runtime.map(|runtime| {
        let runtime = Arc::new(runtime);
        Box::new(move || {
            let runtime = runtime.clone();
            async move {
                // The largest gateway: every replica takes the same kind of load.
                runtime
                    .usage()
                    .await
                    .into_iter()
                    .filter(|usage| usage.service == Service::Gateway)
                    .filter_map(|usage| usage.memory_bytes)
                    .max()
            }
            .boxed()
        }) as MemoryProbe
    });
    let target = Target {
        gateway: gateway_addr,
        direct_gateway: replicas.direct_gateway,
        // Without a runtime to ask, the one cache the stack record names.
        caches: if replicas.caches.is_empty() {
            record.map(|stack| stack.cache).into_iter().collect()
        } else {
            replicas.caches
        },
        topology: replicas.topology,
        cache_tls: home.tls_identity(Holder::Userctl)?,
        redis_url,
        token_algorithm: home
            .signing_keys()?
            .and_then(|set| {
                set.signing(crate::home::now_secs())
                    .map(userctl_keys::Key::algorithm)
            })
            .unwrap_or_default(),
        pids,
        gateway_memory,
    };
    let options = Options {
        workloads: args.workloads,
        limits: Limits {
            concurrency: args.concurrency,
            warmup: args.warmup,
            duration: args.duration,
            requests: args.requests,
        },
        users: args.users,
        zipf: args.zipf,
        redis_outage: !args.no_redis_outage,
    };
    let interactive = std::io::stderr().is_terminal();
    let progress = move |phase: &str| -> Box<dyn Fn() + Send + Sync> {
        if !interactive {
            eprintln!("bench: {phase}");
            return Box::new(|| {});
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:<14} {pos} requests, {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(phase.to_owned());
        Box::new(move || bar.inc(1))
    };
    eprintln!(
        "bench: creating {} accounts (each costs an argon2id hash)",
        args.users
    );
    let notice = |line: &str| eprintln!("bench: {line}");
    let report = bench::run(&target, &options, &progress, &notice).await?;
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|err| CliError::failed(err.to_string()))?
        ),
        OutputFormat::Table => print!("{}", report.table()),
    }
    Ok(())
}

/// What the bench learns from `status` about a stack's replicas.
#[derive(Debug, Default)]
struct Replicas {
    direct_gateway: Option<String>,
    caches: Vec<String>,
    topology: Option<String>,
}

impl Replicas {
    fn of_running(statuses: &[ServiceStatus]) -> Self {
        let running = |service: Service| {
            statuses
                .iter()
                .filter(move |status| status.service == service && status.state == State::Running)
        };
        let count = |service: Service| running(service).count();
        if statuses.is_empty() {
            return Self::default();
        }
        let proxied = count(Service::Proxy) > 0;
        Self {
            direct_gateway: running(Service::Gateway)
                .find_map(|status| status.address.clone())
                .filter(|_| proxied),
            caches: running(Service::Cache)
                .filter_map(|status| status.address.clone())
                .collect(),
            topology: Some(format!(
                "gateway={},cache={},store={}{}",
                count(Service::Gateway),
                count(Service::Cache),
                count(Service::Store),
                if proxied {
                    " (HAProxy in front of the gateways)"
                } else {
                    ""
                }
            )),
        }
    }
}

/// A name per process for the CPU and memory figures: the service's, with the replica's
/// number from the second one on (`cache`, `cache.2`).
fn process_names(processes: Vec<(Service, u32)>) -> Vec<(String, u32)> {
    let mut seen: Vec<Service> = Vec::new();
    processes
        .into_iter()
        .map(|(service, pid)| {
            let nth = seen.iter().filter(|s| **s == service).count() + 1;
            seen.push(service);
            let name = if nth == 1 {
                service.name().to_owned()
            } else {
                format!("{service}.{nth}")
            };
            (name, pid)
        })
        .collect()
}
