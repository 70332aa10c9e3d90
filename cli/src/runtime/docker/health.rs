//! Readiness. The engine runs each container's health check; `up` polls the result with
//! backoff until the container is healthy, has exited, or the deadline has passed. In front of
//! two or more gateways `up` also asks the proxy's published port, as a user's call would.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use bollard::{
    Docker,
    models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum},
};
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{engine::engine, logs};
use crate::{runtime::RuntimeError, stack::Service};

/// Lines of a failed container's log quoted in the error.
const LOG_LINES: usize = 10;

/// What one look at a container says about its readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Healthy,
    /// Running, and its check has not passed (yet).
    Pending,
    /// It stopped: with restart policy "no", nothing will bring it back but `up`.
    Stopped,
}

pub fn readiness(container: &ContainerInspectResponse) -> Readiness {
    let state = container.state.as_ref();
    match state.and_then(|state| state.status) {
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
            Readiness::Stopped
        }
        Some(ContainerStateStatusEnum::RUNNING) => match health(container) {
            // No health check: running is as ready as it gets.
            None
            | Some(HealthStatusEnum::HEALTHY | HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) => {
                Readiness::Healthy
            }
            Some(HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY) => Readiness::Pending,
        },
        _ => Readiness::Pending,
    }
}

/// The engine's verdict of the last health checks (API 1.41 has it only in inspect).
pub fn health(container: &ContainerInspectResponse) -> Option<HealthStatusEnum> {
    container.state.as_ref()?.health.as_ref()?.status
}

/// How many health checks in a row have failed.
pub fn failing_streak(container: &ContainerInspectResponse) -> i64 {
    container
        .state
        .as_ref()
        .and_then(|state| state.health.as_ref())
        .and_then(|health| health.failing_streak)
        .unwrap_or(0)
}

/// Why polling stopped short of healthy.
enum NotReady {
    Pending,
    Stopped,
    Failed(RuntimeError),
}

/// Waits until `name` is healthy, returning its final inspection. Exited when it stops,
/// Unhealthy at `deadline`; both quote its last log lines.
pub async fn wait_healthy(
    docker: &Docker,
    service: Service,
    name: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<ContainerInspectResponse, RuntimeError> {
    let look = || async {
        let container = docker
            .inspect_container(name, None)
            .await
            .map_err(|err| NotReady::Failed(engine(format!("inspecting container {name}"), err)))?;
        match readiness(&container) {
            Readiness::Healthy => Ok(container),
            Readiness::Pending => Err(NotReady::Pending),
            Readiness::Stopped => Err(NotReady::Stopped),
        }
    };
    // Checks run every second; polling starts faster so an already-healthy stack costs
    // one round trip.
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .with_factor(1.5)
        .without_max_times();
    let polled = tokio::time::timeout_at(
        deadline,
        look.retry(backoff)
            .when(|err| matches!(err, NotReady::Pending)),
    );
    match polled.await {
        Ok(Ok(container)) => Ok(container),
        Ok(Err(NotReady::Failed(err))) => Err(err),
        Ok(Err(NotReady::Stopped)) => Err(RuntimeError::Exited {
            service: service.name(),
            logs: logs::last_lines(docker, name, LOG_LINES).await,
        }),
        Ok(Err(NotReady::Pending)) | Err(_) => Err(RuntimeError::Unhealthy {
            service: service.name(),
            timeout,
            logs: logs::last_lines(docker, name, LOG_LINES).await,
        }),
    }
}

/// Waits until the front (the proxy in front of the gateways) answers gRPC health as SERVING
/// through its published address `url`: the whole way a user's call takes, port publishing,
/// HAProxy, DNS discovery and a gateway included.
pub async fn wait_front(
    url: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|err| RuntimeError::other(format!("reading the address {url}"), err))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    let look = || async {
        let channel = endpoint.connect().await.map_err(|err| err.to_string())?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map_err(|status| status.message().to_owned())?;
        match answer.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("{other:?}")),
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .with_factor(1.5)
        .without_max_times();
    let last = std::sync::Mutex::new(String::from("no answer"));
    let polled = look.retry(backoff).notify(|reason, _| {
        if let Ok(mut last) = last.lock() {
            last.clone_from(reason);
        }
    });
    match tokio::time::timeout_at(deadline, polled).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => {
            let reason = last.lock().map(|last| last.clone()).unwrap_or_default();
            Err(RuntimeError::Unhealthy {
                service: Service::Proxy.name(),
                timeout,
                logs: vec![format!("gRPC health through {url}: {reason}")],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerState, Health};

    use super::*;

    fn container(
        status: ContainerStateStatusEnum,
        health: Option<HealthStatusEnum>,
    ) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(ContainerState {
                status: Some(status),
                health: health.map(|status| Health {
                    status: Some(status),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn running_and_healthy_is_ready() {
        let ready = container(
            ContainerStateStatusEnum::RUNNING,
            Some(HealthStatusEnum::HEALTHY),
        );
        assert_eq!(readiness(&ready), Readiness::Healthy);
    }

    #[test]
    fn an_unhealthy_container_may_still_recover() {
        let unhealthy = container(
            ContainerStateStatusEnum::RUNNING,
            Some(HealthStatusEnum::UNHEALTHY),
        );
        assert_eq!(readiness(&unhealthy), Readiness::Pending);
        let starting = container(
            ContainerStateStatusEnum::RUNNING,
            Some(HealthStatusEnum::STARTING),
        );
        assert_eq!(readiness(&starting), Readiness::Pending);
    }

    #[test]
    fn an_exited_container_stops_the_wait() {
        let exited = container(
            ContainerStateStatusEnum::EXITED,
            Some(HealthStatusEnum::UNHEALTHY),
        );
        assert_eq!(readiness(&exited), Readiness::Stopped);
    }
}
