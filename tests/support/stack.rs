//! The whole stack in this process: store, cache and gateway on 127.0.0.1:0, wired exactly as
//! `usersvc` wires them, each stopped (and drained) when the test ends.

use std::{net::SocketAddr, num::NonZeroU32, time::Duration};

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
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(900),
            cache_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
            failed_logins_per_account: NonZeroU32::new(5).expect("non-zero"),
            failed_logins_per_peer: NonZeroU32::new(30).expect("non-zero"),
        }
    }
}

pub struct TestStack {
    pub gateway_addr: String,
    pub cache_addr: String,
    pub store_addr: String,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _key_dir: TempDir,
}

impl TestStack {
    pub async fn start(db: &TestDatabase, redis: &RedisServer) -> Self {
        Self::start_with(db, redis, StackOptions::default()).await
    }

    pub async fn start_with(db: &TestDatabase, redis: &RedisServer, options: StackOptions) -> Self {
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let (store, database) = store::build(&store::Config {
            listen: any_port,
            database_url: db.url().to_owned(),
            connect_timeout: Duration::from_secs(10),
        })
        .await
        .expect("store starts");
        let store_addr = url(store.local_addr().expect("store address"));
        tasks.push(tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                store
                    .run_until_stopped(shutdown)
                    .await
                    .expect("store serves");
                database.close().await;
            }
        }));

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
        let gateway = gateway::build(&gateway::Config {
            listen: any_port,
            cache_addr: cache_addr.clone(),
            jwt_secret_file: key_file,
            token_ttl: options.token_ttl,
            hash_concurrency: None,
            failed_logins_per_account: options.failed_logins_per_account,
            failed_logins_per_peer: options.failed_logins_per_peer,
        })
        .await
        .expect("gateway starts");
        let gateway_addr = url(gateway.local_addr().expect("gateway address"));
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
            cache_addr,
            store_addr,
            shutdown,
            tasks,
            _key_dir: key_dir,
        }
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
        for task in self.tasks.drain(..) {
            task.await.expect("service task ends cleanly");
        }
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
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
