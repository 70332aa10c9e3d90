//! Users calling a stack while its replicas restart or die: three loops through the published
//! ports, as three kinds of user would call — WhoAmI over one long-lived gRPC channel (a service
//! built against the stack), `GET /api/auth/user-profile` over HTTP (a browser or curl), and the
//! real `userctl whoami` (a person at a terminal, a new connection each time). Every call is
//! kept, so a test can say "no call failed" or "only the calls in flight at the kill".

use std::{sync::Arc, time::Duration};

use tonic::{Status, transport::Channel};
use userctl_proto::gateway::v1::gateway_client::GatewayClient;

use crate::{
    cli::Userctl,
    load::{CALL_DEADLINE, Call, Load, MAX_CALLS, Summary, WORKERS, whoami_load},
};

/// Where the loops call: the stack's published gRPC and HTTP addresses.
pub struct Front<'a> {
    /// `http://127.0.0.1:PORT`, the gateway's (or its proxy's) gRPC port.
    pub grpc: &'a str,
    /// `http://127.0.0.1:PORT`, the HTTP door.
    pub http: &'a str,
    /// A valid access token for the gRPC and HTTP loops.
    pub token: &'a str,
    /// A `userctl` logged in to the same stack, for the command loop.
    pub userctl: &'a Userctl,
}

/// The three loops, running.
pub struct Churn {
    grpc: Load,
    http: Load,
    cli: Load,
}

/// Every call each loop made.
pub struct Report {
    pub grpc: Vec<Call>,
    pub http: Vec<Call>,
    pub cli: Vec<Call>,
}

impl Churn {
    /// Starts the loops and returns once each has made a first successful call, so what a
    /// test does next happens under load.
    pub async fn start(front: &Front<'_>) -> Self {
        let channel = Channel::from_shared(front.grpc.to_owned())
            .expect("gateway URL")
            .connect()
            .await
            .expect("connect to the published gateway port");
        let grpc = whoami_load(GatewayClient::new(channel), &[front.token.to_owned()]);
        let http = http_loop(front.http, front.token);
        let cli = cli_loop(front.userctl.clone());
        let churn = Self { grpc, http, cli };
        churn.wait_for_calls(1, Duration::from_secs(30)).await;
        churn
    }

    /// Waits until every loop has finished `more` calls after this point (or `within` passed,
    /// so a stalled loop fails the test's assertions instead of hanging it).
    pub async fn wait_for_calls(&self, more: usize, within: Duration) {
        tokio::join!(
            self.grpc.wait_for_calls(more * WORKERS, within),
            self.http.wait_for_calls(more, within),
            self.cli.wait_for_calls(more.div_ceil(10), within),
        );
    }

    pub async fn stop(self) -> Report {
        let (grpc, http, cli) = tokio::join!(self.grpc.stop(), self.http.stop(), self.cli.stop());
        Report { grpc, http, cli }
    }
}

impl Report {
    fn loops(&self) -> [(&'static str, &[Call]); 3] {
        [
            ("gRPC whoami", &self.grpc),
            ("HTTP user-profile", &self.http),
            ("userctl whoami", &self.cli),
        ]
    }

    /// One line per loop, printed so a run's figures are in its log.
    pub fn print(&self, what: &str) {
        for (name, calls) in self.loops() {
            println!("{what}: {name}: {}", Summary::of(calls));
        }
    }

    /// Every failed call, named by its loop.
    pub fn failures(&self) -> Vec<String> {
        self.loops()
            .into_iter()
            .flat_map(|(name, calls)| {
                calls
                    .iter()
                    .filter_map(move |call| call.result.as_ref().err())
                    .map(move |status| format!("{name}: {:?} {}", status.code(), status.message()))
            })
            .collect()
    }

    /// Panics unless every loop kept calling throughout and no call failed.
    #[track_caller]
    pub fn assert_no_failed_call(&self, what: &str) {
        self.print(what);
        self.assert_kept_calling(what);
        let failures = self.failures();
        assert!(failures.is_empty(), "{what}: failed calls: {failures:?}");
    }

    /// Panics unless every loop kept calling and each lost at most the calls it had in flight
    /// at one instant: what a replica killed outright may cost.
    #[track_caller]
    pub fn assert_at_most_in_flight(&self, what: &str) {
        self.print(what);
        self.assert_kept_calling(what);
        for ((name, calls), in_flight) in self.loops().into_iter().zip([WORKERS, 1, 1]) {
            let failed = calls.iter().filter(|call| call.result.is_err()).count();
            assert!(
                failed <= in_flight,
                "{what}: {name} lost {failed} calls, more than the {in_flight} in flight: {:?}",
                self.failures()
            );
        }
    }

    #[track_caller]
    fn assert_kept_calling(&self, what: &str) {
        for (name, calls) in self.loops() {
            let last = calls.last().expect("the loop made calls");
            assert!(
                last.result.is_ok(),
                "{what}: {name}'s last call failed: the stack did not come back: {:?}",
                last.result
            );
        }
    }
}

/// `GET /api/auth/user-profile` with the token, one call at a time; anything but 200 fails.
fn http_loop(base: &str, token: &str) -> Load {
    let client = reqwest::Client::builder()
        .timeout(CALL_DEADLINE)
        .build()
        .expect("HTTP client");
    let url: Arc<str> = format!("{base}/api/auth/user-profile").into();
    let authorization: Arc<str> = format!("Bearer {token}").into();
    Load::start(1, MAX_CALLS, move |_| {
        let (client, url, authorization) = (client.clone(), url.clone(), authorization.clone());
        async move {
            let response = client
                .get(&*url)
                .header("authorization", &*authorization)
                .send()
                .await
                .map_err(|err| Status::unavailable(err.to_string()))?;
            let code = response.status();
            if code.is_success() {
                Ok(())
            } else {
                let body = response.text().await.unwrap_or_default();
                Err(Status::unknown(format!("HTTP {code}: {body}")))
            }
        }
    })
}

/// The real `userctl whoami`, one run at a time; a non-zero exit fails.
fn cli_loop(userctl: Userctl) -> Load {
    Load::start(1, MAX_CALLS, move |_| {
        let userctl = userctl.clone();
        async move {
            let run = userctl.run(&["whoami"]).await;
            if run.code == 0 {
                Ok(())
            } else {
                Err(Status::unknown(format!(
                    "exit {}: {}",
                    run.code,
                    run.stderr.trim()
                )))
            }
        }
    })
}
