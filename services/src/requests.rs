//! `userctl.requests.v1.Requests`: what this service has answered, per RPC — calls, errors by
//! code, and p50/p99 over the most recent calls. Every server records each request it answers
//! ([`crate::trace::Layer`]; the gateway's HTTP door by route), so the dashboard shows each
//! hop of a request on its own (docs/design.md, "Tracing a request").

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::{Request, Response, Status};
use userctl_proto::requests::v1::{
    GetRequestStatsRequest, RequestStats, RpcStats, requests_server::Requests,
};

/// How many recent calls of an RPC its percentiles are computed over.
const WINDOW: usize = 1024;
/// RPCs kept apart; past this (a caller making up method names), the rest count as one.
const MAX_RPCS: usize = 64;
const OTHER: &str = "other";

/// The figures, shared by the layer that records and the service that reports them.
#[derive(Debug, Default)]
pub struct Recorder {
    rpcs: Mutex<BTreeMap<String, Rpc>>,
}

#[derive(Debug, Default)]
struct Rpc {
    calls: u64,
    errors: BTreeMap<String, u64>,
    /// Microseconds, oldest first.
    recent: VecDeque<u32>,
}

impl Recorder {
    /// One answered call; `error` names its code or status when it did not answer OK.
    pub fn record(&self, rpc: &str, error: Option<&str>, elapsed: Duration) {
        let mut rpcs = self
            .rpcs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let name = if rpcs.contains_key(rpc) || rpcs.len() < MAX_RPCS - 1 {
            rpc
        } else {
            OTHER
        };
        let entry = match rpcs.get_mut(name) {
            Some(entry) => entry,
            None => rpcs.entry(name.to_owned()).or_default(),
        };
        entry.calls += 1;
        if let Some(error) = error {
            *entry.errors.entry(error.to_owned()).or_default() += 1;
        }
        if entry.recent.len() == WINDOW {
            entry.recent.pop_front();
        }
        entry
            .recent
            .push_back(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn snapshot(&self) -> RequestStats {
        let rpcs = self
            .rpcs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        RequestStats {
            rpcs: rpcs
                .iter()
                .map(|(name, rpc)| {
                    let mut sorted: Vec<u32> = rpc.recent.iter().copied().collect();
                    sorted.sort_unstable();
                    RpcStats {
                        rpc: name.clone(),
                        calls: rpc.calls,
                        errors: rpc.errors.clone().into_iter().collect(),
                        p50_us: percentile(&sorted, 0.50),
                        p99_us: percentile(&sorted, 0.99),
                    }
                })
                .collect(),
        }
    }
}

/// Nearest-rank percentile of sorted samples; 0 when there are none.
pub(crate) fn percentile(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    u64::from(sorted[rank - 1])
}

/// The gRPC face of a [`Recorder`].
#[derive(Debug, Clone)]
pub struct RequestsService(pub Arc<Recorder>);

#[tonic::async_trait]
impl Requests for RequestsService {
    async fn get_request_stats(
        &self,
        _: Request<GetRequestStatsRequest>,
    ) -> Result<Response<RequestStats>, Status> {
        Ok(Response::new(self.0.snapshot()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.50), 50);
        assert_eq!(percentile(&samples, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn calls_errors_and_recent_times_per_rpc() {
        let recorder = Recorder::default();
        for i in 1..=WINDOW as u64 + 10 {
            recorder.record("Gateway/WhoAmI", None, Duration::from_micros(i));
        }
        recorder.record("Gateway/WhoAmI", Some("Unauthenticated"), Duration::ZERO);
        recorder.record("UserStore/ReadUser", None, Duration::from_micros(7));
        let stats = recorder.snapshot();
        let names: Vec<&str> = stats.rpcs.iter().map(|rpc| rpc.rpc.as_str()).collect();
        assert_eq!(names, ["Gateway/WhoAmI", "UserStore/ReadUser"]);
        let whoami = &stats.rpcs[0];
        assert_eq!(whoami.calls, WINDOW as u64 + 11);
        assert_eq!(whoami.errors.get("Unauthenticated"), Some(&1));
        // Only the last WINDOW calls count: the first ten and one more have left.
        assert!(whoami.p50_us > 500, "{whoami:?}");
        assert_eq!(stats.rpcs[1].p99_us, 7);
    }

    #[test]
    fn made_up_method_names_share_one_entry_past_the_cap() {
        let recorder = Recorder::default();
        for i in 0..1000 {
            recorder.record(
                &format!("Made/Up{i}"),
                Some("Unimplemented"),
                Duration::ZERO,
            );
        }
        let stats = recorder.snapshot();
        assert_eq!(stats.rpcs.len(), MAX_RPCS);
        let other = stats
            .rpcs
            .iter()
            .find(|rpc| rpc.rpc == OTHER)
            .expect("other");
        assert_eq!(other.calls, 1000 - (MAX_RPCS as u64 - 1));
    }
}
