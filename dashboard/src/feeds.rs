//! The live sources, one task each, pushing [`Update`]s into the app's channel:
//!
//! - `CacheStats/WatchStats` on every cache replica (the counters, every refresh interval);
//! - `grpc.health.v1.Health/Watch` on every gateway, cache and store replica (pushed on
//!   change); the cache and store over mutual TLS when the stack has certificates;
//! - the runtime's status, polled every refresh interval;
//! - recent logs of the selected service or of the whole stack, while the logs pane is open.
//!
//! A source that fails reports it and tries again with exponential backoff, forever: services
//! come and go while the dashboard watches. The first replica of each service is watched from
//! the start at the address the stack record gives; the runtime's rows then say where each
//! replica answers now (a container restarted on a new port moves) and which replicas exist,
//! see [`Feeds::track`]. Nothing here touches the screen.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant, sleep, sleep_until, timeout},
};
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use userctl_proto::{
    cache::v1::{WatchStatsRequest, cache_stats_client::CacheStatsClient},
    requests::v1::{GetRequestStatsRequest, requests_client::RequestsClient},
};

use crate::{
    ClientTls, Endpoints, format,
    model::{GrpcHealth, ReplicaId, Update},
    source::{LogScope, RuntimeSource, Service, ServiceRow},
};

/// Lines of logs fetched for the logs pane; more than any terminal shows.
pub const LOG_TAIL: usize = 200;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings notice a peer that vanished without closing the connection (a paused
/// container, a pulled cable) within about 10 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the runtime may take to answer one status or logs request.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Logs are files or engine calls: once a second is plenty even at a faster refresh.
const MIN_LOGS_REFRESH: Duration = Duration::from_secs(1);

/// The running feeds; [`Feeds::stop`] ends them.
pub struct Feeds {
    cancel: CancellationToken,
    tasks: JoinSet<Ended>,
    /// The gRPC feeds of each `usersvc` replica watched.
    replicas: HashMap<ReplicaId, Watched>,
    tls: Option<Arc<ClientTls>>,
    refresh: Duration,
    updates: mpsc::Sender<Update>,
}

/// The feeds of one `usersvc` replica: where it answers (read at each connect), and how to stop
/// them when the replica goes away.
struct Watched {
    addr: watch::Sender<String>,
    cancel: CancellationToken,
}

/// How a feed's task ended.
enum Ended {
    /// It was told to: the dashboard is closing, or its replica went away.
    Stopped,
    /// On its own, which feeds never do.
    Finished,
}

impl Feeds {
    /// Starts every feed. `logs_wanted` names whose logs to fetch, if any.
    pub fn start(
        endpoints: &Endpoints,
        tls: Option<ClientTls>,
        refresh: Duration,
        runtime: Arc<dyn RuntimeSource>,
        updates: mpsc::Sender<Update>,
        logs_wanted: watch::Receiver<Option<LogScope>>,
    ) -> Self {
        let mut feeds = Self {
            cancel: CancellationToken::new(),
            tasks: JoinSet::new(),
            replicas: HashMap::new(),
            tls: tls.map(Arc::new),
            refresh,
            updates: updates.clone(),
        };
        for (service, addr) in [
            (Service::Gateway, &endpoints.gateway),
            (Service::Cache, &endpoints.cache),
            (Service::Store, &endpoints.store),
        ] {
            feeds.watch(ReplicaId::new(service, 1), addr.clone());
        }
        let cancel = feeds.cancel.clone();
        feeds.spawn(
            cancel.clone(),
            runtime_status(runtime.clone(), refresh, updates.clone()),
        );
        feeds.spawn(cancel, logs(runtime, refresh, logs_wanted, updates));
        feeds
    }

    fn spawn(
        &mut self,
        cancel: CancellationToken,
        feed: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => Ended::Stopped,
                () = feed => Ended::Finished,
            }
        });
    }

    /// Starts the feeds of one `usersvc` replica: its health, its calls per RPC, and its
    /// counters if a cache.
    fn watch(&mut self, id: ReplicaId, addr: String) {
        let addr = watch::Sender::new(addr);
        let cancel = self.cancel.child_token();
        let peer = Peer::new(id.service, self.tls.clone());
        let health = health(id, addr.subscribe(), peer.clone(), self.updates.clone());
        self.spawn(cancel.clone(), health);
        let requests = requests(
            id,
            addr.subscribe(),
            peer.clone(),
            self.refresh,
            self.updates.clone(),
        );
        self.spawn(cancel.clone(), requests);
        if id.service == Service::Cache {
            let stats = stats(
                id.replica,
                addr.subscribe(),
                peer,
                self.refresh,
                self.updates.clone(),
            );
            self.spawn(cancel.clone(), stats);
        }
        self.replicas.insert(id, Watched { addr, cancel });
    }

    /// Follows the runtime's rows, the truth about which replicas exist and where each answers
    /// now (the recorded addresses go stale when a container restarts on an engine-chosen
    /// port): a replica seen for the first time is watched, one that moved is followed there
    /// (a feed waiting to retry tries at once), and one no longer reported stops being
    /// watched, except the first of each service, whose recorded address may yet answer.
    pub fn track(&mut self, rows: &[ServiceRow]) {
        for row in rows.iter().filter(|row| row.service.is_grpc()) {
            let Some(addr) = &row.address else { continue };
            let id = ReplicaId::new(row.service, row.replica);
            match self.replicas.get(&id) {
                Some(watched) => {
                    watched.addr.send_if_modified(|current| {
                        let moved = current != addr;
                        if moved {
                            addr.clone_into(current);
                        }
                        moved
                    });
                }
                None => self.watch(id, addr.clone()),
            }
        }
        let reported: HashSet<ReplicaId> = rows
            .iter()
            .map(|row| ReplicaId::new(row.service, row.replica))
            .collect();
        self.replicas.retain(|id, watched| {
            let keep = id.replica == 1 || reported.contains(id);
            if !keep {
                watched.cancel.cancel();
            }
            keep
        });
    }

    /// Resolves if a feed ends on its own, which only a bug (a panic) makes happen: the
    /// dashboard would otherwise go on showing data that no longer comes.
    pub async fn failure(&mut self) -> String {
        loop {
            match self.tasks.join_next().await {
                // A replica that went away; the others go on.
                Some(Ok(Ended::Stopped)) => {}
                Some(Err(err)) if err.is_panic() => {
                    let panic = err.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".to_owned());
                    return format!("a data feed panicked: {message}");
                }
                Some(_) => return "a data feed stopped".to_owned(),
                None => return std::future::pending().await,
            }
        }
    }

    /// Stops every feed and waits until they have.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One cache replica's counters.
async fn stats(
    replica: u16,
    mut addr: watch::Receiver<String>,
    peer: Peer,
    refresh: Duration,
    updates: mpsc::Sender<Update>,
) {
    let interval_ms = u32::try_from(refresh.as_millis()).unwrap_or(u32::MAX);
    // A live stream sends every interval; this much silence means it is stuck.
    let stall = refresh.saturating_mul(3) + Duration::from_secs(2);
    let mut delays = backoff();
    loop {
        let current = addr.borrow_and_update().clone();
        let (received, reason) =
            stream_stats(replica, &current, &peer, interval_ms, stall, &updates).await;
        if received {
            delays = backoff();
        }
        if updates
            .send(Update::StatsLost { replica, reason })
            .await
            .is_err()
        {
            return;
        }
        retry_after(next_delay(&mut delays), &mut addr).await;
    }
}

/// Forwards one `WatchStats` stream; returns whether it delivered anything and why it ended.
async fn stream_stats(
    replica: u16,
    addr: &str,
    peer: &Peer,
    interval_ms: u32,
    stall: Duration,
    updates: &mpsc::Sender<Update>,
) -> (bool, String) {
    let channel = match connect(addr, peer).await {
        Ok(channel) => channel,
        Err(reason) => return (false, reason),
    };
    let request = WatchStatsRequest { interval_ms };
    let mut stream = match CacheStatsClient::new(channel).watch_stats(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (false, status_text(&status)),
    };
    let mut received = false;
    loop {
        match timeout(stall, stream.message()).await {
            Ok(Ok(Some(stats))) => {
                received = true;
                if updates
                    .send(Update::Stats { replica, stats })
                    .await
                    .is_err()
                {
                    return (received, "the dashboard is closing".into());
                }
            }
            Ok(Ok(None)) => return (received, "the cache ended the stream".into()),
            Ok(Err(status)) => return (received, status_text(&status)),
            Err(_) => {
                return (
                    received,
                    format!("no stats for {}", format::duration(stall)),
                );
            }
        }
    }
}

/// One replica's calls, errors and times per RPC (`Requests/GetRequestStats`), asked every
/// refresh interval over one connection; a failure is left to the health feed to show.
async fn requests(
    id: ReplicaId,
    mut addr: watch::Receiver<String>,
    peer: Peer,
    refresh: Duration,
    updates: mpsc::Sender<Update>,
) {
    let mut delays = backoff();
    loop {
        let current = addr.borrow_and_update().clone();
        if let Ok(channel) = connect(&current, &peer).await {
            let mut client = RequestsClient::new(channel);
            loop {
                let asked = Instant::now();
                let answer = timeout(
                    RUNTIME_TIMEOUT,
                    client.get_request_stats(GetRequestStatsRequest {}),
                );
                let Ok(Ok(response)) = answer.await else {
                    break;
                };
                delays = backoff();
                let stats = response.into_inner();
                if updates.send(Update::Requests { id, stats }).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = sleep_until(asked + refresh) => {}
                    // Moved: ask it there.
                    changed = addr.changed() => if changed.is_err() { return } else { break },
                }
            }
        }
        retry_after(next_delay(&mut delays), &mut addr).await;
    }
}

async fn health(
    id: ReplicaId,
    mut addr: watch::Receiver<String>,
    peer: Peer,
    updates: mpsc::Sender<Update>,
) {
    let mut delays = backoff();
    loop {
        let current = addr.borrow_and_update().clone();
        match watch_health(id, &current, &peer, &updates).await {
            Watch::Lost { received } => {
                if received {
                    delays = backoff();
                }
                let lost = Update::Health {
                    id,
                    health: GrpcHealth::Unreachable,
                };
                if updates.send(lost).await.is_err() {
                    return;
                }
            }
            // Already reported; look again shortly.
            Watch::NotServing => {}
            Watch::Closing => return,
        }
        retry_after(next_delay(&mut delays), &mut addr).await;
    }
}

/// How a `Health/Watch` stream ended.
enum Watch {
    /// No connection, or the stream broke; `received` if it had delivered anything.
    Lost { received: bool },
    /// The service reported NOT_SERVING and the stream was let go.
    NotServing,
    /// The dashboard is closing.
    Closing,
}

/// Forwards one `Health/Watch` stream (the server's overall health).
async fn watch_health(
    id: ReplicaId,
    addr: &str,
    peer: &Peer,
    updates: &mpsc::Sender<Update>,
) -> Watch {
    let lost = Watch::Lost { received: false };
    let Ok(channel) = connect(addr, peer).await else {
        return lost;
    };
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let Ok(response) = HealthClient::new(channel).watch(request).await else {
        return lost;
    };
    let mut stream = response.into_inner();
    let mut received = false;
    while let Ok(Some(report)) = stream.message().await {
        received = true;
        let health = match report.status() {
            ServingStatus::Serving => GrpcHealth::Serving,
            ServingStatus::NotServing | ServingStatus::Unknown | ServingStatus::ServiceUnknown => {
                GrpcHealth::NotServing
            }
        };
        if updates.send(Update::Health { id, health }).await.is_err() {
            return Watch::Closing;
        }
        // A server that is not serving is usually draining, and an open watch would hold
        // its shutdown until the drain times out: let go, and look again after a backoff.
        if health == GrpcHealth::NotServing {
            return Watch::NotServing;
        }
    }
    Watch::Lost { received }
}

async fn runtime_status(
    runtime: Arc<dyn RuntimeSource>,
    refresh: Duration,
    updates: mpsc::Sender<Update>,
) {
    let mut delays = backoff();
    loop {
        let asked = Instant::now();
        let rows = match timeout(RUNTIME_TIMEOUT, runtime.status()).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(err)) => Err(chain(err.as_ref())),
            Err(_) => Err(format!(
                "no answer within {}",
                format::duration(RUNTIME_TIMEOUT)
            )),
        };
        let wake = if rows.is_ok() {
            delays = backoff();
            asked + refresh
        } else {
            Instant::now() + next_delay(&mut delays)
        };
        if updates.send(Update::Runtime(rows)).await.is_err() {
            return;
        }
        sleep_until(wake).await;
    }
}

async fn logs(
    runtime: Arc<dyn RuntimeSource>,
    refresh: Duration,
    mut wanted: watch::Receiver<Option<LogScope>>,
    updates: mpsc::Sender<Update>,
) {
    loop {
        let scope = *wanted.borrow_and_update();
        let Some(scope) = scope else {
            if wanted.changed().await.is_err() {
                return;
            }
            continue;
        };
        let services = match scope {
            LogScope::Service(service) => vec![service],
            LogScope::Stack => Service::ALL.to_vec(),
        };
        let read = services.into_iter().map(|service| {
            let runtime = runtime.clone();
            async move {
                match timeout(RUNTIME_TIMEOUT, runtime.recent_logs(service, LOG_TAIL)).await {
                    Ok(Ok(lines)) => Ok((service, lines)),
                    Ok(Err(err)) => Err(format!("{}: {}", service.name(), chain(err.as_ref()))),
                    Err(_) => Err(format!(
                        "{}: no answer within {}",
                        service.name(),
                        format::duration(RUNTIME_TIMEOUT)
                    )),
                }
            }
        });
        let lines = futures::future::join_all(read)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, String>>();
        if updates.send(Update::Logs { scope, lines }).await.is_err() {
            return;
        }
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            () = sleep(refresh.max(MIN_LOGS_REFRESH)) => {}
        }
    }
}

/// How a feed reaches one service: plaintext (the gateway, or a stack without certificates), or
/// over mutual TLS checking the service's certificate is for its name.
#[derive(Clone)]
struct Peer {
    tls: Option<(Arc<ClientTls>, &'static str)>,
}

impl Peer {
    fn new(service: Service, tls: Option<Arc<ClientTls>>) -> Self {
        let server_name = match service {
            Service::Cache => Some("cache"),
            Service::Store => Some("store"),
            // The gateway's ports are the stack's plaintext front door.
            Service::Proxy | Service::Gateway | Service::Redis | Service::Postgres => None,
        };
        Self {
            tls: tls.zip(server_name),
        }
    }
}

async fn connect(addr: &str, peer: &Peer) -> Result<Channel, String> {
    let invalid = |err: &dyn std::fmt::Display| format!("invalid address {addr}: {err}");
    let endpoint = match &peer.tls {
        None => Endpoint::from_shared(addr.to_owned()).map_err(|err| invalid(&err))?,
        Some((tls, server_name)) => {
            // tonic speaks TLS only to an https:// URL; the scheme `up` recorded says nothing.
            let rest = addr.split_once("://").map_or(addr, |(_, rest)| rest);
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca))
                .identity(Identity::from_pem(&tls.cert, &tls.key))
                .domain_name(*server_name);
            Endpoint::from_shared(format!("https://{rest}"))
                .and_then(|endpoint| endpoint.tls_config(config))
                .map_err(|err| invalid(&err))?
        }
    };
    let endpoint = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    endpoint.connect().await.map_err(|err| root_cause(&err))
}

/// Waits out a backoff delay, cut short when the service moves to a new address.
async fn retry_after(delay: Duration, addr: &mut watch::Receiver<String>) {
    tokio::select! {
        () = sleep(delay) => {}
        // A closed channel disables this branch rather than ending the wait early.
        Ok(()) = addr.changed() => {}
    }
}

fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
}

fn next_delay(delays: &mut ExponentialBackoff) -> Duration {
    delays.next().unwrap_or(MAX_BACKOFF)
}

/// tonic wraps the cause that matters ("Connection refused") in generic layers ("transport
/// error", "tcp connect error"); the innermost one says most in a narrow pane.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn status_text(status: &Status) -> String {
    if let Some(source) = std::error::Error::source(status) {
        return root_cause(source);
    }
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

/// An error and its causes on one line, skipping causes its text already includes.
fn chain(err: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::transport::Server;

    use super::*;
    use crate::source::{LogLine, ServiceRow, SourceError};

    /// Nothing listens here: connections are refused at once.
    const NOWHERE: &str = "http://127.0.0.1:1";
    const WAIT: Duration = Duration::from_secs(10);

    /// A runtime with nothing to say; the test hands the feeds their rows itself.
    struct Silent;

    impl RuntimeSource for Silent {
        fn status(&self) -> BoxFuture<'_, Result<Vec<ServiceRow>, SourceError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn recent_logs(
            &self,
            _: Service,
            _: usize,
        ) -> BoxFuture<'_, Result<Vec<LogLine>, SourceError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    fn at(service: Service, replica: u16, addr: &str) -> ServiceRow {
        ServiceRow {
            replica,
            address: Some(addr.to_owned()),
            ..ServiceRow::new(service, "running")
        }
    }

    /// Waits for the first update `pick` accepts, skipping the others.
    async fn next<T>(
        updates: &mut mpsc::Receiver<Update>,
        pick: impl Fn(Update) -> Option<T>,
    ) -> T {
        timeout(WAIT, async {
            loop {
                let update = updates.recv().await.expect("the feeds run");
                if let Some(found) = pick(update) {
                    return found;
                }
            }
        })
        .await
        .expect("the update within the wait")
    }

    fn watched(feeds: &Feeds) -> Vec<ReplicaId> {
        let mut ids: Vec<ReplicaId> = feeds.replicas.keys().copied().collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn a_replica_is_watched_at_its_own_address_while_reported_and_no_longer_after() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );

        let endpoints = Endpoints {
            gateway: NOWHERE.into(),
            cache: NOWHERE.into(),
            store: NOWHERE.into(),
        };
        let (updates_tx, mut updates) = mpsc::channel(256);
        let (_logs_tx, logs_wanted) = watch::channel(None);
        let refresh = Duration::from_millis(100);
        let mut feeds = Feeds::start(
            &endpoints,
            None,
            refresh,
            Arc::new(Silent),
            updates_tx,
            logs_wanted,
        );
        let gateway = |replica| ReplicaId::new(Service::Gateway, replica);
        let cache = |replica| ReplicaId::new(Service::Cache, replica);
        let store = ReplicaId::new(Service::Store, 1);
        assert_eq!(watched(&feeds), [gateway(1), cache(1), store]);

        // The second gateway answers at its own address; the second cache nowhere.
        feeds.track(&[
            at(Service::Gateway, 2, &addr),
            at(Service::Cache, 2, NOWHERE),
        ]);
        assert_eq!(
            watched(&feeds),
            [gateway(1), gateway(2), cache(1), cache(2), store]
        );
        let health = |id| {
            move |update| match update {
                Update::Health { id: from, health } if from == id => Some(health),
                _ => None,
            }
        };
        assert_eq!(
            next(&mut updates, health(gateway(2))).await,
            GrpcHealth::Serving
        );
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        assert_eq!(
            next(&mut updates, health(gateway(2))).await,
            GrpcHealth::NotServing
        );
        // Cache replica 2 has a stats feed of its own, which reports its failure as its own.
        let lost = |update| matches!(update, Update::StatsLost { replica: 2, .. }).then_some(());
        next(&mut updates, lost).await;

        // Both gone from the rows: their feeds stop, and that is no feed failing. The first
        // replicas stay, at the recorded address, even when not reported.
        feeds.track(&[]);
        assert_eq!(watched(&feeds), [gateway(1), cache(1), store]);
        assert!(
            timeout(Duration::from_millis(500), feeds.failure())
                .await
                .is_err(),
            "stopping a replica's feeds is not a failure"
        );
        // Runtime polls, logs, and the seven feeds of the first replicas: health and requests
        // of each, the cache's counters.
        assert_eq!(feeds.tasks.len(), 9);
        feeds.stop().await;
        server.abort();
    }
}
