//! `stats`: each cache replica's counters, read from its own `CacheStats`, and the stack's total,
//! so nobody needs a gRPC tool to see them.

use futures::future;
use serde::Serialize;
use userctl_proto::cache::v1::{
    GetStatsRequest, RedisBreaker, Stats, cache_stats_client::CacheStatsClient,
};

use crate::{
    args::{OutputArgs, OutputFormat},
    client,
    error::{CliError, Result},
    home::ProjectHome,
    output,
    pki::Holder,
    runtime::Runtime,
    stack::{Service, State},
};

/// One line of `userctl stats`: a cache replica, or the stack's total (`replica` null).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    pub service: &'static str,
    /// From 1; null on the total row.
    pub replica: Option<u16>,
    pub hits: u64,
    pub misses: u64,
    pub negative_hits: u64,
    pub coalesced: u64,
    pub store_calls: u64,
    pub creates: u64,
    pub redis_errors: u64,
    /// Null on the total row and for a replica that did not answer.
    pub redis_up: Option<bool>,
    /// The replica's Redis breaker: `closed`, `open` or `half-open`; null as `redis_up` is.
    pub breaker: Option<&'static str>,
    pub breaker_opens: u64,
    /// Redis calls the breaker skipped (those reads went to the store).
    pub redis_skipped: u64,
    /// Whether the replica answered; a replica that did not counts as zero in the total.
    pub answered: bool,
}

impl Row {
    fn of(replica: u16, stats: Option<Stats>) -> Self {
        let Some(stats) = stats else {
            return Self {
                service: Service::Cache.name(),
                replica: Some(replica),
                ..Self::default()
            };
        };
        Self {
            service: Service::Cache.name(),
            replica: Some(replica),
            hits: stats.hits,
            misses: stats.misses,
            negative_hits: stats.negative_hits,
            coalesced: stats.coalesced,
            store_calls: stats.store_calls,
            creates: stats.creates,
            redis_errors: stats.redis_errors,
            redis_up: Some(stats.redis_up),
            breaker: breaker_name(stats.redis_breaker()),
            breaker_opens: stats.breaker_opens,
            redis_skipped: stats.redis_skipped,
            answered: true,
        }
    }

    /// The sum of `rows`, answered when any of them did.
    fn total(rows: &[Row]) -> Self {
        rows.iter().fold(
            Self {
                service: "total",
                ..Self::default()
            },
            |total, row| Self {
                hits: total.hits + row.hits,
                misses: total.misses + row.misses,
                negative_hits: total.negative_hits + row.negative_hits,
                coalesced: total.coalesced + row.coalesced,
                store_calls: total.store_calls + row.store_calls,
                creates: total.creates + row.creates,
                redis_errors: total.redis_errors + row.redis_errors,
                breaker_opens: total.breaker_opens + row.breaker_opens,
                redis_skipped: total.redis_skipped + row.redis_skipped,
                answered: total.answered || row.answered,
                ..total
            },
        )
    }

    /// Hits over reads, as a percentage; none before the first read.
    fn hit_ratio(&self) -> Option<f64> {
        let reads = self.hits + self.misses;
        (reads > 0).then(|| self.hits as f64 * 100.0 / reads as f64)
    }
}

pub async fn show(home: &ProjectHome, args: OutputArgs) -> Result<()> {
    if home.stack()?.is_none() {
        return Err(
            CliError::unreachable(format!("project {} is not up", home.name))
                .with_hint("run `userctl up` first"),
        );
    }
    let runtime = Runtime::reopen(home).await?;
    let caches: Vec<(u16, String)> = runtime
        .status()
        .await?
        .into_iter()
        .filter(|status| status.service == Service::Cache && status.state == State::Running)
        .filter_map(|status| Some((status.replica, status.address?)))
        .collect();
    if caches.is_empty() {
        return Err(
            CliError::unreachable(format!("no cache of project {} is running", home.name))
                .with_hint("see `userctl status`"),
        );
    }
    let identity = home.tls_identity(Holder::Userctl)?;
    let rows: Vec<Row> = future::join_all(caches.iter().map(|(replica, addr)| {
        let identity = identity.as_ref();
        async move { Row::of(*replica, read(addr, identity).await) }
    }))
    .await;
    if !rows.iter().any(|row| row.answered) {
        return Err(
            CliError::unreachable(format!("no cache of project {} answered", home.name))
                .with_hint("see `userctl status`"),
        );
    }
    let mut rows = rows;
    rows.push(Row::total(&rows));
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&rows)
                .map_err(|err| CliError::failed(err.to_string()))?;
            println!("{json}");
        }
        OutputFormat::Table => print!("{}", table(&rows)),
    }
    Ok(())
}

/// One replica's counters; none when it does not answer (it may be restarting).
async fn read(addr: &str, identity: Option<&crate::home::TlsIdentity>) -> Option<Stats> {
    let channel = client::connect_internal(addr, Service::Cache.name(), identity)
        .await
        .ok()?;
    CacheStatsClient::new(channel)
        .get_stats(GetStatsRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

fn breaker_name(state: RedisBreaker) -> Option<&'static str> {
    match state {
        RedisBreaker::Unspecified => None,
        RedisBreaker::Closed => Some("closed"),
        RedisBreaker::Open => Some("open"),
        RedisBreaker::HalfOpen => Some("half-open"),
    }
}

fn table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let counter = |value: u64| {
                if row.answered {
                    value.to_string()
                } else {
                    "-".to_owned()
                }
            };
            vec![
                row.service.to_owned(),
                row.replica
                    .map_or_else(|| "-".to_owned(), |r| r.to_string()),
                counter(row.hits),
                counter(row.misses),
                row.hit_ratio()
                    .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.1}%")),
                counter(row.negative_hits),
                counter(row.coalesced),
                counter(row.store_calls),
                counter(row.creates),
                counter(row.redis_errors),
                match row.redis_up {
                    Some(true) => "up".to_owned(),
                    Some(false) => "down".to_owned(),
                    None if row.answered => "-".to_owned(),
                    None => "no answer".to_owned(),
                },
                row.breaker.unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    output::table(
        &[
            "service",
            "replica",
            "hits",
            "misses",
            "hit ratio",
            "negative hits",
            "coalesced",
            "store calls",
            "creates",
            "redis errors",
            "redis",
            "breaker",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_adds_every_replica_that_answered() {
        let one = Row::of(
            1,
            Some(Stats {
                hits: 3,
                misses: 1,
                store_calls: 1,
                redis_up: true,
                ..Stats::default()
            }),
        );
        let two = Row::of(
            2,
            Some(Stats {
                hits: 5,
                misses: 3,
                store_calls: 2,
                ..Stats::default()
            }),
        );
        let silent = Row::of(3, None);
        let total = Row::total(&[one, two, silent.clone()]);
        assert_eq!((total.hits, total.misses, total.store_calls), (8, 4, 3));
        assert_eq!(total.replica, None);
        assert_eq!(total.hit_ratio(), Some(200.0 / 3.0));
        assert!(!silent.answered);
    }

    #[test]
    fn json_rows_name_their_service_and_replica() {
        let rows = [Row::of(2, Some(Stats::default())), Row::total(&[])];
        let json = serde_json::to_value(rows).expect("json");
        assert_eq!(json[0]["service"], "cache");
        assert_eq!(json[0]["replica"], 2);
        assert_eq!(json[1]["service"], "total");
        assert_eq!(json[1]["replica"], serde_json::Value::Null);
    }
}
