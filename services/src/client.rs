//! Outbound gRPC channels: one long-lived, lazily connected channel per dependency, with a
//! connect timeout and a deadline on every call, so a dependency that is down costs a caller at
//! most [`CALL_TIMEOUT`], never a hang; over mutual TLS when the service has its TLS files.
//!
//! - [`endpoint`]: the one place an [`Endpoint`] is made from a URL (timeouts, TCP_NODELAY,
//!   keepalive, TLS); every channel below, balanced or not, is built from it. Whether a hop
//!   uses TLS follows from the TLS flags alone: addresses are written `http://host:port` (or
//!   `https://`, the same with TLS); an `https://` address without the TLS flags is refused at
//!   start rather than silently sent in plaintext.
//! - [`connect`]: the channel to a dependency named by `--cache-addr` or `--store-addr`. One
//!   URL with an IP address is a plain channel, as it always was. A comma-separated list, or a
//!   URL whose host is a name (which may resolve to every replica, as docker, swarm and
//!   Kubernetes DNS do), is a balanced channel fed by a discovery task: it re-resolves every
//!   [`RESOLVE_INTERVAL`] and keeps in the balance only the replicas whose health watch says
//!   SERVING (see [`Membership`] for the rule).
//! - [`idempotent`] and [`once`]: a call within [`CALL_TIMEOUT`] (or less, when the caller's own
//!   deadline, [`caller_budget`], is shorter); an idempotent one is retried on a transport failure
//!   (twice at most, within its deadline), so a replica going away mid-call costs the caller
//!   nothing.
//!
//! docs/design.md ("Replicas") describes the behaviour.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{
    Status,
    metadata::MetadataMap,
    transport::{Channel, ClientTlsConfig, Endpoint, channel::Change},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Deadline on every call a service makes to the next one (both attempts of a retried call
/// together).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the discovery task resolves the names again, so replicas that come and go (a
/// scale, a rolling restart under a new address) join and leave the balance.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a health watcher waits before dialling a replica that refused it or was not
/// serving; a replica that comes back is in the balance again within about this long.
const REDIAL_INTERVAL: Duration = Duration::from_millis(500);
/// Pause before the first retry of an idempotent call: the replica that failed is usually gone
/// from the balance by then (its health watch broke at the same moment), so the retry lands on
/// another one.
const RETRY_PAUSE: Duration = Duration::from_millis(25);
/// Attempts of an idempotent call that fails in transport, the first included: enough to
/// outlast a loaded machine's delay in dropping a replica that went away (25 + 50 ms), few
/// enough that with no replica left the caller hears UNAVAILABLE promptly, not at its deadline.
const MAX_ATTEMPTS: u32 = 3;
/// Least time worth spending on a retry: less than this left of the deadline, fail now.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum InvalidAddress {
    #[error(
        "invalid address {addr:?}: expected a URL such as http://127.0.0.1:50053, or several separated by commas"
    )]
    Malformed { addr: String },
    #[error(
        "address {addr:?} asks for TLS, but --tls-ca, --tls-cert and --tls-key are not set; \
         write it http:// for plaintext"
    )]
    HttpsWithoutTls { addr: String },
    #[error("cannot use the TLS settings for {addr:?}")]
    Tls {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl InvalidAddress {
    fn new(addr: &str) -> Self {
        Self::Malformed {
            addr: addr.to_owned(),
        }
    }
}

/// The endpoint for `url`, with every setting an outbound connection has; with `tls`, over
/// mutual TLS whatever the scheme of `url` says.
pub fn endpoint(url: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, InvalidAddress> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| InvalidAddress::new(url))?;
    let endpoint = match (scheme, tls) {
        ("http" | "https", Some(tls)) => Endpoint::from_shared(format!("https://{rest}"))
            .map_err(|_| InvalidAddress::new(url))?
            .tls_config(tls.clone())
            .map_err(|source| InvalidAddress::Tls {
                addr: url.to_owned(),
                source,
            })?,
        ("http", None) => {
            Endpoint::from_shared(url.to_owned()).map_err(|_| InvalidAddress::new(url))?
        }
        ("https", None) => {
            return Err(InvalidAddress::HttpsWithoutTls {
                addr: url.to_owned(),
            });
        }
        _ => return Err(InvalidAddress::new(url)),
    };
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

/// A channel whose calls carry the running request's trace on (see [`crate::trace`]): what the
/// gateway and the cache call the next hop through.
pub type Traced = tonic::service::interceptor::InterceptedService<Channel, crate::trace::Propagate>;

/// `channel`, its calls traced.
pub fn traced(channel: Channel) -> Traced {
    Traced::new(channel, crate::trace::Propagate)
}

/// A channel to the one server at `addr` that connects on first use and reconnects by itself.
pub fn channel(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel, InvalidAddress> {
    Ok(endpoint(addr, tls)?.connect_lazy())
}

/// A channel to every replica `addrs` names (see the module docs). A balanced channel's
/// discovery task stops with `shutdown`.
pub fn connect(
    addrs: &str,
    tls: Option<ClientTlsConfig>,
    shutdown: &CancellationToken,
) -> Result<Channel, InvalidAddress> {
    match Replicas::parse(addrs)? {
        Replicas::Single(url) => channel(&url, tls.as_ref()),
        Replicas::Balanced(targets) => {
            // Every URL is checked now, so a bad one stops the start instead of a replica.
            for target in &targets {
                endpoint(&target.to_string(), tls.as_ref())?;
            }
            Ok(balanced(targets, tls, system_resolver(), shutdown))
        }
    }
}

/// What a `--cache-addr` / `--store-addr` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Replicas {
    /// One URL whose host is an IP address: nothing to resolve or balance.
    Single(String),
    /// Several URLs, or one whose host is a name.
    Balanced(Vec<Target>),
}

/// One URL of a list: `scheme://host:port`, the host an IP address or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

impl Replicas {
    fn parse(value: &str) -> Result<Self, InvalidAddress> {
        let urls: Vec<&str> = value.split(',').map(str::trim).collect();
        if let [url] = urls.as_slice() {
            // Kept exactly as before lists existed: whatever `Endpoint` accepts.
            let uri = uri(url)?;
            if uri.host().is_none_or(|host| ip(host).is_some()) {
                return Ok(Self::Single((*url).to_owned()));
            }
        }
        urls.iter()
            .map(|url| Target::parse(url).ok_or_else(|| InvalidAddress::new(url)))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::Balanced)
    }
}

impl Target {
    fn parse(url: &str) -> Option<Self> {
        let uri = uri(url).ok()?;
        let scheme = uri.scheme_str()?.to_owned();
        let port = match (uri.port_u16(), scheme.as_str()) {
            (Some(port), _) => port,
            (None, "http") => 80,
            (None, "https") => 443,
            (None, _) => return None,
        };
        let host = uri.host().filter(|host| !host.is_empty())?.to_owned();
        let path_free = uri.path().is_empty() || uri.path() == "/";
        path_free.then_some(Self { scheme, host, port })
    }

    /// The URL of one resolved replica.
    fn url(&self, addr: SocketAddr) -> String {
        format!("{}://{addr}", self.scheme)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// `url` parsed as `Endpoint` parses it.
fn uri(url: &str) -> Result<tonic::codegen::http::Uri, InvalidAddress> {
    Endpoint::from_shared(url.to_owned())
        .map(|endpoint| endpoint.uri().clone())
        .map_err(|_| InvalidAddress::new(url))
}

/// `host` as an IP address, brackets and all (`[::1]`).
fn ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

type ResolveFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;
/// Resolves a host name and port to addresses.
type Resolver = Arc<dyn Fn(String, u16) -> ResolveFuture + Send + Sync>;

/// The system's resolver (getaddrinfo: /etc/hosts, then DNS), as every other program here.
fn system_resolver() -> Resolver {
    Arc::new(|host, port| {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    })
}

/// A balanced channel over `targets`, kept current by a discovery task.
fn balanced(
    targets: Vec<Target>,
    tls: Option<ClientTlsConfig>,
    resolver: Resolver,
    shutdown: &CancellationToken,
) -> Channel {
    // Room for every change of one round; the task waits when the balance lags behind.
    let (channel, changes) = Channel::balance_channel(64);
    let discovery = Discovery {
        targets,
        tls,
        resolver,
        changes,
        membership: Membership::default(),
        last_resolved: HashMap::new(),
    };
    tokio::spawn(discovery.run(shutdown.clone()));
    channel
}

/// What a health watcher last saw of its replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Not yet known: just resolved.
    Unknown,
    Serving,
    /// Refused the connection, broke it, or reported NOT_SERVING.
    Down,
}

/// The replicas the names resolve to, their health, and which of them are in the balance.
///
/// The rule: the balance holds the replicas that report SERVING. When none does (at start,
/// before any watch has answered, or with every replica down) it holds every known replica
/// instead, so calls fail fast with UNAVAILABLE, as with one address, rather than wait for a
/// replica that may never come.
#[derive(Debug, Default)]
struct Membership {
    /// Every resolved replica: its URL, health and the generation of its watcher.
    known: HashMap<SocketAddr, Member>,
    /// What the balance holds now.
    balanced: HashSet<SocketAddr>,
    next_generation: u64,
}

#[derive(Debug)]
struct Member {
    url: String,
    health: Health,
    generation: u64,
    /// Stops the replica's health watcher when it leaves.
    watcher: CancellationToken,
}

/// A replica a watcher should start watching.
struct Joined {
    addr: SocketAddr,
    url: String,
    generation: u64,
    watcher: CancellationToken,
}

impl Membership {
    /// The replicas resolved this round (`addr → URL`): new ones join, vanished ones leave.
    fn resolved(&mut self, found: HashMap<SocketAddr, String>) -> Vec<Joined> {
        self.known.retain(|addr, member| {
            let stays = found.contains_key(addr);
            if !stays {
                member.watcher.cancel();
            }
            stays
        });
        let mut joined = Vec::new();
        for (addr, url) in found {
            if self.known.contains_key(&addr) {
                continue;
            }
            self.next_generation += 1;
            let member = Member {
                url: url.clone(),
                health: Health::Unknown,
                generation: self.next_generation,
                watcher: CancellationToken::new(),
            };
            joined.push(Joined {
                addr,
                url,
                generation: member.generation,
                watcher: member.watcher.clone(),
            });
            self.known.insert(addr, member);
        }
        joined
    }

    /// A watcher's report; one from a replica that left (or an earlier watcher of it) is
    /// ignored.
    fn report(&mut self, addr: SocketAddr, generation: u64, health: Health) {
        if let Some(member) = self.known.get_mut(&addr)
            && member.generation == generation
        {
            member.health = health;
        }
    }

    /// The changes that bring the balance to the rule above, applied to `balanced`.
    fn rebalance(&mut self) -> Vec<Change<SocketAddr, String>> {
        let serving: HashSet<SocketAddr> = self
            .known
            .iter()
            .filter(|(_, member)| member.health == Health::Serving)
            .map(|(addr, _)| *addr)
            .collect();
        let wanted = if serving.is_empty() {
            self.known.keys().copied().collect()
        } else {
            serving
        };
        let mut changes: Vec<_> = self
            .balanced
            .difference(&wanted)
            .map(|addr| Change::Remove(*addr))
            .collect();
        changes.extend(
            wanted
                .difference(&self.balanced)
                .map(|addr| Change::Insert(*addr, self.known[addr].url.clone())),
        );
        self.balanced = wanted;
        changes
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for member in self.known.values() {
            member.watcher.cancel();
        }
    }
}

/// The task behind a balanced channel.
struct Discovery {
    targets: Vec<Target>,
    /// Every replica's endpoint gets it, the health watches' too.
    tls: Option<ClientTlsConfig>,
    resolver: Resolver,
    changes: mpsc::Sender<Change<SocketAddr, Endpoint>>,
    membership: Membership,
    /// What each name resolved to last, kept while a lookup fails (a DNS hiccup must not
    /// empty the balance).
    last_resolved: HashMap<(String, u16), Vec<SocketAddr>>,
}

/// A watcher's report: the replica, its watcher's generation, what it saw.
type Report = (SocketAddr, u64, Health);

impl Discovery {
    async fn run(mut self, shutdown: CancellationToken) {
        let (report, mut reports) = mpsc::channel::<Report>(64);
        let mut resolve = tokio::time::interval(RESOLVE_INTERVAL);
        resolve.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = resolve.tick() => {
                    let found = self.resolve().await;
                    for joined in self.membership.resolved(found) {
                        tokio::spawn(watch(joined, self.tls.clone(), report.clone()));
                    }
                }
                Some((addr, generation, health)) = reports.recv() => {
                    self.membership.report(addr, generation, health);
                }
            }
            for change in self.membership.rebalance() {
                let change = match change {
                    Change::Insert(addr, url) => match endpoint(&url, self.tls.as_ref()) {
                        Ok(endpoint) => Change::Insert(addr, endpoint),
                        Err(err) => {
                            tracing::warn!(%err, "skipping a replica");
                            continue;
                        }
                    },
                    Change::Remove(addr) => Change::Remove(addr),
                };
                tracing::debug!(?change, "balance changes");
                if self.changes.send(change).await.is_err() {
                    // Every clone of the channel is gone: nobody calls this dependency.
                    return;
                }
            }
        }
    }

    /// Every target's addresses now: an IP as itself, a name as it resolves (or as it last
    /// resolved, when the lookup fails).
    async fn resolve(&mut self) -> HashMap<SocketAddr, String> {
        let mut found = HashMap::new();
        for target in &self.targets {
            let addrs = match ip(&target.host) {
                Some(ip) => vec![SocketAddr::new(ip, target.port)],
                None => {
                    let key = (target.host.clone(), target.port);
                    match (self.resolver)(target.host.clone(), target.port).await {
                        Ok(addrs) if !addrs.is_empty() => {
                            self.last_resolved.insert(key, addrs.clone());
                            addrs
                        }
                        outcome => {
                            let err = outcome.err().map(|err| err.to_string());
                            tracing::warn!(
                                host = target.host,
                                ?err,
                                "cannot resolve; keeping what it resolved to last"
                            );
                            self.last_resolved.get(&key).cloned().unwrap_or_default()
                        }
                    }
                }
            };
            for addr in addrs {
                found.insert(addr, target.url(addr));
            }
        }
        found
    }
}

/// Watches one replica's health (`grpc.health.v1.Health/Watch`, the server's overall status)
/// on a connection of its own, until the replica leaves. Down is reported on a refused
/// connection or a NOT_SERVING; a watch that merely ends (the server's maximum connection age)
/// is dialled again at once, so only the new dial's outcome counts.
async fn watch(joined: Joined, tls: Option<ClientTlsConfig>, report: mpsc::Sender<Report>) {
    let Joined {
        addr,
        url,
        generation,
        watcher,
    } = joined;
    let Ok(endpoint) = endpoint(&url, tls.as_ref()) else {
        return;
    };
    let send = |health| {
        let report = report.clone();
        async move {
            let _ = report.send((addr, generation, health)).await;
        }
    };
    let watching = async {
        loop {
            match watch_once(&endpoint, &send).await {
                Ended::Down => {
                    send(Health::Down).await;
                    tokio::time::sleep(REDIAL_INTERVAL).await;
                }
                // Not a hot loop: a server that ends every watch at once still waits a little.
                Ended::Closed => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
    };
    tokio::select! {
        _ = watcher.cancelled() => {}
        () = watching => {}
    }
}

/// How one watch ended.
enum Ended {
    /// The replica refused, failed, or reported it is not serving.
    Down,
    /// The stream or connection ended after the replica had been serving.
    Closed,
}

async fn watch_once<F, Fut>(endpoint: &Endpoint, send: &F) -> Ended
where
    F: Fn(Health) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(channel) = endpoint.connect().await else {
        return Ended::Down;
    };
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let Ok(response) = HealthClient::new(channel).watch(request).await else {
        return Ended::Down;
    };
    let mut stream = response.into_inner();
    loop {
        match stream.message().await {
            Ok(Some(update)) if update.status() == ServingStatus::Serving => {
                send(Health::Serving).await;
            }
            // Dropping the stream lets a draining server finish instead of waiting on it.
            Ok(Some(_)) => return Ended::Down,
            Ok(None) | Err(_) => return Ended::Closed,
        }
    }
}

/// The time the caller gave its call (its `grpc-timeout`), when it said: what a call made on
/// its behalf may spend, retry included. None when it set no deadline or sent one that is not
/// in the gRPC form (1 to 8 digits and a unit: H, M, S, m, u, n).
pub fn caller_budget(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(unit_at);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Runs an idempotent call (a read) within [`CALL_TIMEOUT`], or within the caller's `budget`
/// when that is shorter, and again when an attempt fails in transport (the replica went away
/// mid-call, or was refused), up to [`MAX_ATTEMPTS`] while the deadline leaves room: the
/// balance sends each retry to a replica still in it, after a pause that doubles from
/// [`RETRY_PAUSE`]. Usually the first retry lands (the failed replica left the balance the
/// moment its health watch broke); on a loaded machine that watch may run later, and the second
/// covers it. `call` gets the time left, to send as its deadline.
pub async fn idempotent<T, F, Fut>(budget: Option<Duration>, mut call: F) -> Result<T, Status>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let budget = budget.map_or(CALL_TIMEOUT, |budget| budget.min(CALL_TIMEOUT));
    let deadline = tokio::time::Instant::now() + budget;
    let mut pause = RETRY_PAUSE;
    let mut outcome = within(deadline, call(budget)).await;
    for _ in 1..MAX_ATTEMPTS {
        match outcome {
            Err(status) if is_transport_failure(&status) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left < pause + MIN_RETRY_BUDGET {
                    return Err(status);
                }
                tracing::debug!(%status, ?pause, "retrying a read on another replica");
                tokio::time::sleep(pause).await;
                outcome = within(deadline, call(left - pause)).await;
                pause *= 2;
            }
            outcome => return outcome,
        }
    }
    outcome
}

/// Runs a call that must not be repeated (a write) within [`CALL_TIMEOUT`]: a failure is the
/// caller's to report, since the first attempt may have landed.
pub async fn once<T, Fut>(call: impl FnOnce(Duration) -> Fut) -> Result<T, Status>
where
    Fut: Future<Output = Result<T, Status>>,
{
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    within(deadline, call(CALL_TIMEOUT)).await
}

/// `call`, cut at `deadline`: a balanced channel with no replica to send to would otherwise
/// hold the call.
async fn within<T>(
    deadline: tokio::time::Instant,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("no replica answered in time")))
}

/// Whether a failed call was never answered by the peer: the status was made here, from a
/// transport error (connection refused or reset, a GOAWAY while the peer shuts down, a
/// timeout), rather than received from the peer. Such a status can carry any code — tonic
/// maps a GOAWAY with NO_ERROR, which a peer sends while it drains, to INTERNAL — yet it always
/// means "the dependency is unavailable; retry shortly".
pub fn is_transport_failure(status: &Status) -> bool {
    // Statuses received from the peer are decoded from its headers and never have a source.
    std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests;
