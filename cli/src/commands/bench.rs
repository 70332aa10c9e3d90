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
    stack::Service,
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
        let pids = runtime
            .processes()
            .into_iter()
            .map(|(service, pid)| (service.name(), pid))
            .collect();
        (runtime.redis_url(), pids)
    });
    let gateway_memory = runtime.map(|runtime| {
        let runtime = Arc::new(runtime);
        Box::new(move || {
            let runtime = runtime.clone();
            async move {
                runtime
                    .usage()
                    .await
                    .into_iter()
                    .find(|usage| usage.service == Service::Gateway)?
                    .memory_bytes
            }
            .boxed()
        }) as MemoryProbe
    });
    let target = Target {
        gateway: gateway_addr,
        cache: record.map(|stack| stack.cache),
        cache_tls: home.tls_identity(Holder::Userctl)?,
        redis_url,
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
