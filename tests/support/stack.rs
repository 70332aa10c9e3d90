//! The whole stack in this process: store, cache and gateway on 127.0.0.1:0, wired exactly as
//! `usersvc` wires them, each stopped (and drained) when the test ends. The store can be stopped
//! and started again on its address while the rest keeps running, as a crashed or redeployed
//! store would be.

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

/// The JWT key every test stack signs with; tests use it to forge tokens.
pub const JWT_SECRET: &[u8] = b"test key: 32 bytes or more, never used outside tests";

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
        }
    }
}

pub struct TestStack {
    pub gateway_addr: String,
    /// The gateway's HTTP/JSON API, `http://127.0.0.1:PORT` (no trailing slash).
    pub http_addr: String,
    pub cache_addr: String,
    pub store_addr: String,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The store runs apart from `tasks` so that it alone can be stopped and restarted.
    store: Option<StoreTask>,
    database_url: String,
    /// The throttle's counters, shared by every gateway of the stack.
    redis_url: String,
    options: StackOptions,
    key_file: PathBuf,
    _key_dir: TempDir,
}

/// A running store: its own token (a child of the stack's) and its task.
struct StoreTask {
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

        let (store_task, store_listen) = start_store(any_port, db.url(), &shutdown).await;
        let store_addr = url(store_listen);

        let (cache, probe) = cache::build(
            &cache::Config {
                listen: any_port,
                redis_url: redis.url(),
                store_addr: store_addr.clone(),
                ttl: options.cache_ttl,
                negative_ttl: options.negative_ttl,
                redis_timeout: Duration::from_millis(100),
            },
            shutdown.clone(),
        )
        .await
        .expect("cache starts");
        let cache_addr = url(cache.local_addr().expect("cache address"));
        tasks.push(tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                cache
                    .run_until_stopped(shutdown)
                    .await
                    .expect("cache serves");
                probe.await.expect("redis probe stops");
            }
        }));

        let key_dir = tempfile::tempdir().expect("temp dir for the key");
        let key_file = key_dir.path().join("jwt.key");
        std::fs::write(&key_file, JWT_SECRET).expect("write key");
        let gateway = gateway::build(&gateway_config(
            &cache_addr,
            &redis.url(),
            &key_file,
            &options,
        ))
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

        for addr in [&store_addr, &cache_addr, &gateway_addr] {
            crate::eventually(Duration::from_secs(10), || {
                usersvc::health::probe(addr, Duration::from_secs(1))
            })
            .await
            .expect("service reports SERVING");
        }
        Self {
            gateway_addr,
            http_addr,
            cache_addr,
            store_addr,
            shutdown,
            tasks,
            store: Some(store_task),
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
        if let Some(store) = self.store.take() {
            store.shutdown.cancel();
            store.task.await.expect("store task ends cleanly");
        }
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
        self.store = Some(store);
        crate::eventually(Duration::from_secs(10), || {
            usersvc::health::probe(&self.store_addr, Duration::from_secs(1))
        })
        .await
        .expect("the restarted store reports SERVING");
    }

    /// A second gateway, with the same key and options, that reads the store directly instead
    /// of going through the cache (docs/design.md allows either): the store path, as a baseline
    /// for what the cache adds or saves. It stops with the stack.
    pub async fn gateway_without_cache(&mut self) -> GatewayClient<Channel> {
        let gateway = gateway::build(&gateway_config(
            &self.store_addr,
            &self.redis_url,
            &self.key_file,
            &self.options,
        ))
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
            usersvc::health::probe(&addr, Duration::from_secs(1))
        })
        .await
        .expect("store-path gateway reports SERVING");
        GatewayClient::new(channel(&addr).await)
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
        let store = self.store.take().map(|store| store.task);
        for task in self.tasks.drain(..).chain(store) {
            task.await.expect("service task ends cleanly");
        }
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Builds and runs a store on `listen` until `parent` (or the store's own token) is cancelled.
async fn start_store(
    listen: SocketAddr,
    database_url: &str,
    parent: &CancellationToken,
) -> (StoreTask, SocketAddr) {
    let (store, database) = store::build(&store::Config {
        listen,
        database_url: database_url.to_owned(),
        connect_timeout: Duration::from_secs(10),
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
    (StoreTask { shutdown, task }, bound)
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
        jwt_secret_file: key_file.to_path_buf(),
        token_ttl: options.token_ttl,
        hash_concurrency: None,
        hash_jobs_per_peer: 64,
        failed_logins_per_account: options.failed_logins_per_account,
        failed_logins_per_peer: options.failed_logins_per_peer,
        registrations_per_peer: options.registrations_per_peer,
        header_timeout: options.header_timeout,
        http_max_connections: options.http_max_connections,
        redis_url: Some(gateway::config::RedisUrl(redis_url.to_owned())),
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
