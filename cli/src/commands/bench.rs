//! `bench`: load the running stack, print the figures and their ratios to same-run baselines.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{
    args::{BenchArgs, OutputFormat},
    bench::{self, Options, Report, Target, load::Limits, micros},
    client,
    error::{CliError, Result},
    home::ProjectHome,
    output,
    runtime::Runtime,
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
    let target = Target {
        gateway: gateway_addr,
        cache: record.map(|stack| stack.cache),
        redis_url,
        pids,
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
    let report = bench::run(&target, &options, &progress).await?;
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|err| CliError::failed(err.to_string()))?
        ),
        OutputFormat::Table => print!("{}", render(&report)),
    }
    Ok(())
}

fn render(report: &Report) -> String {
    let b = &report.baselines;
    let mut rows = vec![
        row("echo (1 in flight)", &b.echo_single, None, None),
        row(
            &format!("echo ({} in flight)", report.concurrency),
            &b.echo_loaded,
            None,
            None,
        ),
    ];
    if let Some(redis) = &b.redis_get {
        rows.push(row("redis GET (1 in flight)", redis, None, None));
    }
    if let Some(single) = &report.whoami_single {
        rows.push(row("whoami (1 in flight)", single, None, None));
    }
    for w in &report.workloads {
        let vs_echo = w.measurement.rps / b.echo_loaded.rps;
        rows.push(row(
            &format!("{:?}", w.workload).to_lowercase(),
            &w.measurement,
            w.hit_ratio,
            Some(vs_echo),
        ));
    }
    let mut out = output::table(
        &[
            "workload",
            "req/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "errors",
            "hit ratio",
            "req/s vs echo",
        ],
        &rows,
    );
    if let Some(note) = &b.redis_note {
        out.push_str(&format!("\nnote: {note}\n"));
    }
    out.push_str(&format!(
        "\nargon2id hash here: {:.1} ms; cores: {}\n",
        b.argon2_hash_ms, report.cores
    ));
    for w in &report.workloads {
        if !w.cpu_percent.is_empty() {
            let cpu: Vec<String> = w
                .cpu_percent
                .iter()
                .map(|(s, p)| format!("{s} {p:.0}%"))
                .collect();
            out.push_str(
                &format!("cpu during {:?}: {}\n", w.workload, cpu.join(", ")).to_lowercase(),
            );
        }
    }
    if !report.idle_rss_kib.is_empty() {
        let rss: Vec<String> = report
            .idle_rss_kib
            .iter()
            .map(|(s, kib)| format!("{s} {:.1} MB", *kib as f64 / 1024.0))
            .collect();
        out.push_str(&format!("idle RSS: {}\n", rss.join(", ")));
    }
    out.push('\n');
    let checks: Vec<Vec<String>> = report
        .targets
        .iter()
        .map(|c| {
            vec![
                c.name.to_owned(),
                format!("{:.3}", c.value),
                c.goal.clone(),
                if c.met {
                    "met".into()
                } else {
                    "NOT MET".into()
                },
            ]
        })
        .collect();
    out.push_str(&output::table(&["target", "measured", "goal", ""], &checks));
    out
}

fn row(
    name: &str,
    m: &bench::load::Measurement,
    hit_ratio: Option<f64>,
    vs_echo: Option<f64>,
) -> Vec<String> {
    vec![
        name.to_owned(),
        format!("{:.0}", m.rps),
        micros(m.p50_us),
        micros(m.p90_us),
        micros(m.p99_us),
        micros(m.p999_us),
        m.errors.to_string(),
        hit_ratio.map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
        vs_echo.map_or("-".into(), |r| format!("{r:.2}")),
    ]
}
