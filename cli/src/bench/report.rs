//! What `userctl bench` found, and how it reads as a table.

use std::time::Duration;

use serde::Serialize;
use userctl_dashboard::format;

use super::{baseline::Baselines, checks::Check, load::Measurement, outage::RedisOutage};
use crate::{args::Workload, output};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The replicas the bench found (`gateway=2,cache=2,store=1`), where a runtime tells.
    pub topology: Option<String>,
    pub concurrency: usize,
    pub cores: usize,
    pub baselines: Baselines,
    pub workloads: Vec<WorkloadReport>,
    /// whoami with 1 in flight: its latency against the unloaded baselines.
    pub whoami_single: Option<Measurement>,
    /// The same, straight to one gateway past the proxy, when a proxy stands in front.
    pub whoami_single_direct: Option<Measurement>,
    /// whoami while the stack's Redis hung, and the breaker's figures.
    pub redis_outage: Option<RedisOutage>,
    /// Why there are no outage figures, when the bench could not make one.
    pub redis_outage_note: Option<String>,
    pub single_flight: Option<SingleFlight>,
    pub idle_rss_kib: Vec<(String, u64)>,
    /// The gateway's memory right after the login workload, where its runtime tells.
    pub gateway_rss_after_login_kib: Option<u64>,
    pub targets: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    pub workload: Workload,
    /// Requests it kept in flight: `--concurrency`, or fewer for login (see `login_limits`).
    pub concurrency: usize,
    #[serde(flatten)]
    pub measurement: Measurement,
    /// hits / (hits + misses) over this workload, from `CacheStats`.
    pub hit_ratio: Option<f64>,
    /// CPU of each service over this workload, percent of one core.
    pub cpu_percent: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SingleFlight {
    pub concurrent_misses: u64,
    /// The reads were spread evenly over this many cache replicas.
    pub cache_replicas: usize,
    pub store_calls: u64,
}

impl Report {
    /// The figures, the notes on what could not be measured, then the targets.
    pub fn table(&self) -> String {
        let b = &self.baselines;
        let mut rows = vec![
            row("echo (1 in flight)", &b.echo_single, None, None),
            row(
                &format!("echo ({} in flight)", self.concurrency),
                &b.echo_loaded,
                None,
                None,
            ),
        ];
        if let (Some(single), Some(loaded)) = (&b.echo_tls_single, &b.echo_tls_loaded) {
            rows.push(row("echo, TLS (1 in flight)", single, None, None));
            rows.push(row(
                &format!("echo, TLS ({} in flight)", self.concurrency),
                loaded,
                None,
                None,
            ));
        }
        if let Some(redis) = &b.redis_get {
            rows.push(row("redis GET (1 in flight)", redis, None, None));
        }
        if let Some(single) = &self.whoami_single {
            rows.push(row("whoami (1 in flight)", single, None, None));
        }
        if let Some(direct) = &self.whoami_single_direct {
            rows.push(row("whoami (1, no proxy)", direct, None, None));
        }
        if let Some(outage) = &self.redis_outage {
            rows.push(row("whoami (1, Redis hung)", &outage.during, None, None));
            rows.push(row("whoami (1, Redis back)", &outage.after, None, None));
        }
        for w in &self.workloads {
            let vs_echo = w.measurement.rps / b.echo_loaded.rps;
            let name = w.workload.name();
            rows.push(row(
                &if w.concurrency == self.concurrency {
                    name.to_owned()
                } else {
                    format!("{name} ({} in flight)", w.concurrency)
                },
                &w.measurement,
                w.hit_ratio,
                Some(vs_echo),
            ));
        }
        let mut out = self
            .topology
            .as_ref()
            .map_or_else(String::new, |topology| format!("replicas: {topology}\n\n"));
        out += &output::table(
            &[
                "workload",
                "req/s",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "errors",
                "throttled",
                "hit ratio",
                "req/s vs echo",
            ],
            &rows,
        );
        if let (Some(proxied), Some(direct)) = (&self.whoami_single, &self.whoami_single_direct) {
            out.push_str(&format!(
                "\nthe proxy's hop: whoami p50 {} through it, {} straight to one gateway ({:.2}x)\n",
                format::latency(Duration::from_micros(proxied.p50_us)),
                format::latency(Duration::from_micros(direct.p50_us)),
                proxied.p50_us as f64 / direct.p50_us.max(1) as f64
            ));
        }
        if let Some(outage) = &self.redis_outage {
            let seconds = |ms: Option<u64>| {
                ms.map_or_else(
                    || "never".to_owned(),
                    |ms| format!("{:.2} s", ms as f64 / 1e3),
                )
            };
            out.push_str(&format!(
                "\nRedis hung for {:.0} s: the breaker opened after {}, hits resumed {} after it answered again; {} whoami calls failed\n",
                outage.hang_ms as f64 / 1e3,
                seconds(outage.breaker_open_after_ms),
                seconds(outage.hits_resumed_after_ms),
                outage.failed()
            ));
        }
        for note in [&b.redis_note, &self.redis_outage_note]
            .into_iter()
            .flatten()
        {
            out.push_str(&format!("\nnote: {note}\n"));
        }
        out.push_str(&format!(
            "\nargon2id hash here: {:.1} ms; every core at once: {:.0} hashes/s; cores: {}\n",
            b.argon2_hash_ms, b.argon2_parallel_per_sec, self.cores
        ));
        for w in &self.workloads {
            if matches!(w.workload, Workload::Login | Workload::Register) {
                out.push_str(&format!(
                    "{}: {:.2} of what every core can hash\n",
                    w.workload.name(),
                    w.measurement.rps / b.argon2_parallel_per_sec
                ));
            }
        }
        out.push_str(&format!(
            "token verify here ({}): {:.1} µs\n",
            b.token_algorithm, b.token_verify_us
        ));
        for w in &self.workloads {
            if !w.cpu_percent.is_empty() {
                let cpu: Vec<String> = w
                    .cpu_percent
                    .iter()
                    .map(|(s, p)| format!("{s} {p:.0}%"))
                    .collect();
                out.push_str(&format!(
                    "cpu during {}: {}\n",
                    w.workload.name(),
                    cpu.join(", ")
                ));
            }
        }
        if !self.idle_rss_kib.is_empty() {
            let rss: Vec<String> = self
                .idle_rss_kib
                .iter()
                .map(|(s, kib)| format!("{s} {:.1} MB", *kib as f64 / 1024.0))
                .collect();
            out.push_str(&format!("idle RSS: {}\n", rss.join(", ")));
        }
        if let Some(kib) = self.gateway_rss_after_login_kib {
            out.push_str(&format!(
                "gateway RSS after login: {:.1} MB\n",
                kib as f64 / 1024.0
            ));
        }
        for w in &self.workloads {
            if w.measurement.throttled > 0 {
                out.push_str(&format!(
                    "{}: {} answers refused by the gateway's limits (RESOURCE_EXHAUSTED), left out of its rate and latencies\n",
                    w.workload.name(),
                    w.measurement.throttled
                ));
            }
        }
        out.push('\n');
        let checks: Vec<Vec<String>> = self
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
}

fn row(name: &str, m: &Measurement, hit_ratio: Option<f64>, vs_echo: Option<f64>) -> Vec<String> {
    let latency = |us: u64| format::latency(Duration::from_micros(us));
    vec![
        name.to_owned(),
        format!("{:.0}", m.rps),
        latency(m.p50_us),
        latency(m.p90_us),
        latency(m.p99_us),
        latency(m.p999_us),
        m.errors.to_string(),
        m.throttled.to_string(),
        hit_ratio.map_or("-".into(), format::percent),
        vs_echo.map_or("-".into(), |r| format!("{r:.2}")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::checks::{
        checks,
        tests::{baselines, measurement, workload},
    };

    fn report() -> Report {
        let baselines = baselines();
        let mut whoami = workload(Workload::Whoami, 5000.0, Some(0.973));
        whoami.cpu_percent = vec![("gateway".into(), 91.6), ("cache".into(), 40.2)];
        let workloads = vec![whoami, workload(Workload::Login, 70.0, None)];
        let whoami_single = Some(measurement(3000.0, 275));
        let single_flight = Some(SingleFlight {
            concurrent_misses: 1000,
            cache_replicas: 1,
            store_calls: 1,
        });
        let targets = checks(
            &baselines,
            &workloads,
            whoami_single.as_ref(),
            None,
            single_flight.as_ref(),
            Some(50 * 1024),
        );
        Report {
            topology: None,
            concurrency: 64,
            cores: 4,
            baselines,
            workloads,
            whoami_single,
            whoami_single_direct: None,
            redis_outage: None,
            redis_outage_note: None,
            single_flight,
            idle_rss_kib: vec![("gateway".into(), 10_240), ("cache".into(), 8_704)],
            gateway_rss_after_login_kib: Some(50 * 1024),
            targets,
        }
    }

    fn line_starting<'a>(table: &'a str, start: &str) -> &'a str {
        table
            .lines()
            .find(|line| line.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{table}"))
    }

    fn cells(line: &str) -> Vec<&str> {
        line.split("  ")
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .collect()
    }

    #[test]
    fn the_table_lists_baselines_then_workloads() {
        let table = report().table();
        let names: Vec<&str> = table
            .lines()
            .take_while(|line| !line.is_empty())
            .skip(1)
            .map(|line| cells(line)[0])
            .collect();
        assert_eq!(
            names,
            [
                "echo (1 in flight)",
                "echo (64 in flight)",
                "redis GET (1 in flight)",
                "whoami (1 in flight)",
                "whoami",
                "login",
            ]
        );
        assert_eq!(
            cells(line_starting(&table, "WORKLOAD")),
            [
                "WORKLOAD",
                "REQ/S",
                "P50",
                "P90",
                "P99",
                "P99.9",
                "ERRORS",
                "THROTTLED",
                "HIT RATIO",
                "REQ/S VS ECHO"
            ]
        );
    }

    #[test]
    fn a_workload_row_has_its_latencies_ratio_and_share_of_echo() {
        let table = report().table();
        assert_eq!(
            cells(line_starting(&table, "whoami  ")),
            [
                "whoami", "5000", "1.0 ms", "2.0 ms", "3.0 ms", "4.0 ms", "0", "0", "97.3%", "0.50"
            ]
        );
        // Baselines have no hit ratio and are not compared with themselves.
        assert_eq!(
            cells(line_starting(&table, "redis GET")),
            [
                "redis GET (1 in flight)",
                "15000",
                "50 µs",
                "100 µs",
                "150 µs",
                "200 µs",
                "0",
                "0",
                "-",
                "-"
            ]
        );
    }

    #[test]
    fn the_notes_name_hash_time_cpu_and_memory() {
        let table = report().table();
        assert!(
            table.contains(
                "\nargon2id hash here: 50.0 ms; every core at once: 80 hashes/s; cores: 4\nlogin: 0.88 of what every core can hash\n"
            ),
            "{table}"
        );
        assert!(
            table.contains("\ncpu during whoami: gateway 92%, cache 40%\n"),
            "{table}"
        );
        assert!(
            table.contains("\nidle RSS: gateway 10.0 MB, cache 8.5 MB\n"),
            "{table}"
        );
        assert!(
            table.contains("\ngateway RSS after login: 50.0 MB\n"),
            "{table}"
        );
        assert!(
            !table.contains("refused by the gateway's limits"),
            "{table}"
        );
        assert!(!table.contains("note:"), "{table}");
    }

    #[test]
    fn a_workload_run_with_fewer_in_flight_says_how_many() {
        let mut report = report();
        report.workloads[1].concurrency = 8;
        let table = report.table();
        assert!(
            line_starting(&table, "login (8 in flight)  ").contains("70"),
            "{table}"
        );
    }

    #[test]
    fn throttled_answers_have_their_column_and_a_note() {
        let mut report = report();
        let mut register = workload(Workload::Register, 1.0, None);
        register.measurement.throttled = 1234;
        report.workloads.push(register);
        let table = report.table();
        assert_eq!(cells(line_starting(&table, "register  "))[7], "1234");
        assert!(
            table.contains(
                "\nregister: 1234 answers refused by the gateway's limits (RESOURCE_EXHAUSTED), left out of its rate and latencies\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn a_missing_redis_baseline_is_explained() {
        let mut report = report();
        report.baselines.redis_get = None;
        report.baselines.redis_note = Some("no Redis here".into());
        let table = report.table();
        assert!(!table.contains("redis GET"), "{table}");
        assert!(table.contains("\nnote: no Redis here\n"), "{table}");
    }

    #[test]
    fn targets_say_met_or_not_met() {
        let table = report().table();
        assert_eq!(
            cells(line_starting(&table, "login throughput")),
            [
                "login throughput / argon2id hashes a second on every core",
                "0.875",
                ">= 0.9",
                "NOT MET"
            ]
        );
        assert_eq!(
            cells(line_starting(&table, "store calls")),
            [
                "store calls for 1000 concurrent misses on one key, per cache replica",
                "1.000",
                "<= 1",
                "met"
            ]
        );
    }

    #[test]
    fn with_a_proxy_the_table_shows_the_topology_and_the_proxys_hop() {
        let mut report = report();
        report.topology =
            Some("gateway=2,cache=2,store=1 (HAProxy in front of the gateways)".into());
        report.whoami_single_direct = Some(measurement(3500.0, 250));
        let table = report.table();
        assert!(
            table.starts_with("replicas: gateway=2,cache=2,store=1"),
            "{table}"
        );
        assert!(
            line_starting(&table, "whoami (1, no proxy)").contains("250"),
            "{table}"
        );
        assert!(
            table.contains("the proxy's hop: whoami p50 275 µs through it, 250 µs straight to one gateway (1.10x)"),
            "{table}"
        );
    }

    #[test]
    fn an_outage_has_its_rows_and_a_line_saying_what_the_breaker_did() {
        let mut report = report();
        report.redis_outage = Some(crate::bench::checks::tests::outage(Some(312), 2_400, 0));
        let table = report.table();
        assert!(
            line_starting(&table, "whoami (1, Redis hung)").contains("2.4 ms"),
            "{table}"
        );
        assert!(
            line_starting(&table, "whoami (1, Redis back)").contains("400 µs"),
            "{table}"
        );
        assert!(
            table.contains("\nRedis hung for 4 s: the breaker opened after 0.31 s, hits resumed 0.64 s after it answered again; 0 whoami calls failed\n"),
            "{table}"
        );
    }

    #[test]
    fn the_json_report_keeps_the_raw_figures_beside_the_ratios() {
        let mut report = report();
        report.baselines.echo_tls_single = Some(measurement(6000.0, 150));
        report.redis_outage = Some(crate::bench::checks::tests::outage(Some(312), 2_400, 0));
        let json = serde_json::to_value(report).expect("a report serializes");
        assert_eq!(json["baselines"]["echo_single"]["p50_us"], 100);
        assert_eq!(json["baselines"]["echo_tls_single"]["p50_us"], 150);
        assert_eq!(json["baselines"]["argon2_parallel_per_sec"], 80.0);
        assert_eq!(json["baselines"]["token_verify_us"], 50.0);
        assert_eq!(json["whoami_single"]["p50_us"], 275);
        assert_eq!(json["redis_outage"]["breaker_open_after_ms"], 312);
        assert_eq!(json["redis_outage"]["during"]["p99_us"], 2_400);
        assert_eq!(json["redis_outage"]["hits_resumed_after_ms"], 640);
    }

    #[test]
    fn the_json_report_keeps_its_field_names() {
        let json = serde_json::to_value(report()).expect("a report serializes");
        let whoami = &json["workloads"][0];
        assert_eq!(whoami["workload"], "whoami");
        // The measurement is flattened into the workload.
        assert_eq!(whoami["p50_us"], 1000);
        assert_eq!(json["baselines"]["argon2_hash_ms"], 50.0);
        assert_eq!(json["targets"][4]["goal"], "<= 64");
        assert_eq!(json["targets"][5]["goal"], "<= 1");
        assert_eq!(json["single_flight"]["cache_replicas"], 1);
        assert_eq!(json["gateway_rss_after_login_kib"], 50 * 1024);
        assert_eq!(json["single_flight"]["store_calls"], 1);
    }
}
