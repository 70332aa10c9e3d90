//! The whole stack in this process: store, cache and gateway on 127.0.0.1:0, wired exactly as
//! `usersvc` wires them, each stopped (and drained) when the test ends. The store can be stopped
//! and started again on its address while the rest keeps running, as a crashed or redeployed
//! store would be. With [`StackOptions::caches`] or [`StackOptions::stores`] above one, each
//! service runs as that many replicas, and the next hop is given every replica's address as a
//! comma-separated list; one replica can be stopped (drained) while the rest keep serving.

use std::{
    net::SocketAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use userctl_proto::{
    cache::v1::{GetStatsRequest, Stats, cache_stats_client::CacheStatsClient},
    gateway::v1::gateway_client::GatewayClient,
    user::v1::user_store_client::UserStoreClient,
};
use usersvc::{cache, gateway, store};

use crate::{database::TestDatabase, redis::RedisServer};

#[derive(Debug, Clone)]
pub struct StackOptions {
    pub token_ttl: Duration,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub failed_logins_per_account: NonZeroU32,
    pub failed_logins_per_peer: NonZeroU32,
    /// The gateway's `--registrations-per-peer`: the production default unless a test needs
    /// more accounts than a developer would make in a minute.
    pub registrations_per_peer: NonZeroU32,
    /// Browser origins the HTTP API allows (CORS); none by default, as in production.
    pub cors_origins: Vec<String>,
    /// The gateway's `--header-timeout` (HTTP headers, HTTP/2 preface).
    pub header_timeout: Duration,
    /// The gateway's `--http-max-connections`.
    pub http_max_connections: u32,
    /// The gateway's `--grpc-max-connections`.
    pub grpc_max_connections: u32,
    /// Cache replicas (at least one).
    pub caches: usize,
    /// Store replicas (at least one), all on the stack's one database.
    pub stores: usize,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(900),
            cache_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
            failed_logins_per_account: NonZeroU32::new(5).expect("non-zero"),
            failed_logins_per_peer: NonZeroU32::new(30).expect("non-zero"),
            registrations_per_peer: NonZeroU32::new(60).expect("non-zero"),
            cors_origins: Vec::new(),
            header_timeout: Duration::from_secs(10),
            http_max_connections: 1024,
            grpc_max_connections: 1024,
            caches: 1,
            stores: 1,
        }
    }
}

pub struct TestStack {
    pub gateway_addr: String,
    /// The gateway's HTTP/JSON API, `http://127.0.0.1:PORT` (no trailing slash).
    pub http_addr: String,
    /// The first cache replica.
    pub cache_addr: String,
    /// The first store replica.
    pub store_addr: String,
    /// Every cache replica, in start order.
    pub cache_addrs: Vec<String>,
    /// Every store replica, in start order.
    pub store_addrs: Vec<String>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The cache replicas run apart from `tasks` so that each can be stopped on its own.
    caches: Vec<Option<ReplicaTask>>,
    /// The store replicas, likewise; the first can also be restarted.
    stores: Vec<Option<ReplicaTask>>,
    database_url: String,
    /// The throttle's counters, shared by every gateway of the stack.
    redis_url: String,
    options: StackOptions,
    key_file: PathBuf,
    _key_dir: TempDir,
}

/// A running replica: its own token (a child of the stack's) and its task.
struct ReplicaTask {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestStack {
    pub async fn start(db: &TestDatabase, redis: &RedisServer) -> Self {
        Self::start_with(db, redis, StackOptions::default()).await
    }

    pub async fn start_with(db: &TestDatabase, redis: &RedisServer, options: StackOptions) -> Self {
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let mut stores = Vec::new();
        let mut store_addrs = Vec::new();
        for _ in 0..options.stores.max(1) {
            let (store, listen) = start_store(any_port, db.url(), &shutdown).await;
            stores.push(Some(store));
            store_addrs.push(url(listen));
        }
        let mut caches = Vec::new();
        let mut cache_addrs = Vec::new();
        for _ in 0..options.caches.max(1) {
            let (cache, listen) = start_cache(
                any_port,
                &redis.url(),
                &store_addrs.join(","),
                &options,
                &shutdown,
            )
            .await;
            caches.push(Some(cache));
            cache_addrs.push(url(listen));
        }
        let store_addr = store_addrs[0].clone();
        let cache_addr = cache_addrs[0].clone();

        // A key set of its own, as `userctl up` makes for each stack.
        let key_dir = tempfile::tempdir().expect("temp dir for the key set");
        let key_file = crate::keys::write_key_set(key_dir.path());
        let gateway = gateway::build(
            &gateway_config(&cache_addrs.join(","), &redis.url(), &key_file, &options),
            &shutdown,
        )
        .await
        .expect("gateway starts");
        let gateway_addr = url(gateway.local_addr().expect("gateway address"));
        // Bound already, so connections queue until it serves: no readiness wait is needed.
        let http_addr = url(gateway.http_addr().expect("the test gateway serves HTTP"));
        tasks.push(tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                gateway
                    .run_until_stopped(shutdown)
                    .await
                    .expect("gateway serves")
            }
        }));

        for addr in store_addrs
            .iter()
            .chain(&cache_addrs)
            .chain([&gateway_addr])
        {
            crate::eventually(Duration::from_secs(10), || {
                usersvc::health::probe(addr, Duration::from_secs(1), None)
            })
            .await
            .expect("service reports SERVING");
        }
        Self {
            gateway_addr,
            http_addr,
            cache_addr,
            store_addr,
            cache_addrs,
            store_addrs,
            shutdown,
            tasks,
            caches,
            stores,
            database_url: db.url().to_owned(),
            redis_url: redis.url(),
            options,
            key_file,
            _key_dir: key_dir,
        }
    }

    /// Stops the store as a deploy would (it drains in-flight requests, then closes its
    /// listener and database pool); the cache and gateway keep running. Idempotent.
    pub async fn stop_store(&mut self) {
        self.stop_store_replica(0).await;
    }

    /// Stops store replica `i` as a deploy would (reports NOT_SERVING, waits for clients to
    /// move away, drains). Idempotent.
    pub async fn stop_store_replica(&mut self, i: usize) {
        if let Some(store) = self.stores[i].take() {
            store.stop().await;
        }
    }

    /// Stops cache replica `i` as a deploy would (reports NOT_SERVING, waits for clients to
    /// move away, drains). Idempotent.
    pub async fn stop_cache_replica(&mut self, i: usize) {
        if let Some(cache) = self.caches[i].take() {
            cache.stop().await;
        }
    }

    /// The counters of cache replica `i`.
    pub async fn replica_stats(&self, i: usize) -> Stats {
        CacheStatsClient::new(channel(&self.cache_addrs[i]).await)
            .get_stats(GetStatsRequest {})
            .await
            .expect("GetStats")
            .into_inner()
    }

    /// Starts the store again on the address it had, so the cache's channel finds it.
    pub async fn restart_store(&mut self) {
        self.stop_store().await;
        let listen: SocketAddr = self
            .store_addr
            .trim_start_matches("http://")
            .parse()
            .expect("store address");
        let (store, _) = start_store(listen, &self.database_url, &self.shutdown).await;
        self.stores[0] = Some(store);
        crate::eventually(Duration::from_secs(10), || {
            usersvc::health::probe(&self.store_addr, Duration::from_secs(1), None)
        })
        .await
        .expect("the restarted store reports SERVING");
    }

    /// A second gateway, with the same key and options, that reads the store directly instead
    /// of going through the cache (docs/design.md allows either): the store path, as a baseline
    /// for what the cache adds or saves. It stops with the stack.
    pub async fn gateway_without_cache(&mut self) -> GatewayClient<Channel> {
        let gateway = gateway::build(
            &gateway_config(
                &self.store_addr,
                &self.redis_url,
                &self.key_file,
                &self.options,
            ),
            &self.shutdown,
        )
        .await
        .expect("store-path gateway starts");
        let addr = url(gateway.local_addr().expect("gateway address"));
        self.tasks.push(tokio::spawn({
            let shutdown = self.shutdown.clone();
            async move {
                gateway
                    .run_until_stopped(shutdown)
                    .await
                    .expect("store-path gateway serves")
            }
        }));
        crate::eventually(Duration::from_secs(10), || {
            usersvc::health::probe(&addr, Duration::from_secs(1), None)
        })
        .await
        .expect("store-path gateway reports SERVING");
        GatewayClient::new(channel(&addr).await)
    }

    /// The stack's signing key set file (`signing-keys.json`).
    pub fn signing_keys(&self) -> &Path {
        &self.key_file
    }

    /// `claims` signed with the stack's signing key and naming it (`kid`), as its gateway signs
    /// a token: tests forge tokens with whatever claims they need.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        crate::keys::sign(&self.key_file, claims)
    }

    pub async fn gateway(&self) -> GatewayClient<Channel> {
        GatewayClient::new(channel(&self.gateway_addr).await)
    }

    pub async fn cache(&self) -> UserStoreClient<Channel> {
        UserStoreClient::new(channel(&self.cache_addr).await)
    }

    pub async fn store(&self) -> UserStoreClient<Channel> {
        UserStoreClient::new(channel(&self.store_addr).await)
    }

    pub async fn stats(&self) -> Stats {
        CacheStatsClient::new(channel(&self.cache_addr).await)
            .get_stats(GetStatsRequest {})
            .await
            .expect("GetStats")
            .into_inner()
    }

    /// Cancels every service and waits for each to drain and exit.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let replicas = self.stores.iter_mut().chain(&mut self.caches);
        let replicas: Vec<JoinHandle<()>> = replicas
            .filter_map(|replica| replica.take())
            .map(|replica| replica.task)
            .collect();
        for task in self.tasks.drain(..).chain(replicas) {
            task.await.expect("service task ends cleanly");
        }
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl ReplicaTask {
    /// Cancels its token and waits for it to drain and exit.
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("replica task ends cleanly");
    }
}

/// Builds and runs a cache on `listen` until `parent` (or the cache's own token) is cancelled.
async fn start_cache(
    listen: SocketAddr,
    redis_url: &str,
    store_addrs: &str,
    options: &StackOptions,
    parent: &CancellationToken,
) -> (ReplicaTask, SocketAddr) {
    let shutdown = parent.child_token();
    let (cache, probe) = cache::build(
        &cache::Config {
            listen,
            redis_url: redis_url.to_owned(),
            redis_url_file: None,
            store_addr: store_addrs.to_owned(),
            ttl: options.cache_ttl,
            negative_ttl: options.negative_ttl,
            redis_timeout: Duration::from_millis(100),
            // By hand, as in the README: plaintext. tests/internal_tls.rs runs real stacks.
            tls: Default::default(),
        },
        shutdown.clone(),
    )
    .await
    .expect("cache starts");
    let bound = cache.local_addr().expect("cache address");
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            cache
                .run_until_stopped(shutdown)
                .await
                .expect("cache serves");
            probe.await.expect("redis probe stops");
        }
    });
    (ReplicaTask { shutdown, task }, bound)
}

/// Builds and runs a store on `listen` until `parent` (or the store's own token) is cancelled.
async fn start_store(
    listen: SocketAddr,
    database_url: &str,
    parent: &CancellationToken,
) -> (ReplicaTask, SocketAddr) {
    let (store, database) = store::build(&store::Config {
        listen,
        database_url: database_url.to_owned(),
        database_url_file: None,
        connect_timeout: Duration::from_secs(10),
        tls: Default::default(),
    })
    .await
    .expect("store starts");
    let bound = store.local_addr().expect("store address");
    let shutdown = parent.child_token();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            store
                .run_until_stopped(shutdown)
                .await
                .expect("store serves");
            database.close().await;
        }
    });
    (ReplicaTask { shutdown, task }, bound)
}

fn gateway_config(
    users_addr: &str,
    redis_url: &str,
    key_file: &Path,
    options: &StackOptions,
) -> gateway::Config {
    gateway::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        // Port 0 as for gRPC, so stacks side by side never collide on 8080.
        http_listen: Some("127.0.0.1:0".parse().expect("address")),
        cors_origins: options.cors_origins.clone(),
        cache_addr: users_addr.to_owned(),
        signing_keys: key_file.to_path_buf(),
        token_ttl: options.token_ttl,
        hash_concurrency: None,
        hash_jobs_per_peer: 64,
        failed_logins_per_account: options.failed_logins_per_account,
        failed_logins_per_peer: options.failed_logins_per_peer,
        registrations_per_peer: options.registrations_per_peer,
        header_timeout: options.header_timeout,
        http_max_connections: options.http_max_connections,
        grpc_max_connections: options.grpc_max_connections,
        redis_url: Some(gateway::config::RedisUrl(redis_url.to_owned())),
        redis_url_file: None,
        tls: Default::default(),
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

async fn channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(addr.to_owned())
        .expect("valid address")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}
