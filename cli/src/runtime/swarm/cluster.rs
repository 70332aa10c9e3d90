//! The engine's place in a swarm: whether it is a manager `up` can use, making a single-node
//! swarm when asked to (`--init-swarm`), and leaving it again on `down` when `userctl` made it.
//!
//! What `userctl` initialised it writes into the swarm itself, as labels on the swarm's spec,
//! not into one project's home: any project's `down` then knows, and the last one out leaves
//! the engine as it was found.

use std::collections::HashMap;

use bollard::{
    Docker,
    models::{LocalNodeState, SwarmInitRequest, SwarmSpec},
    query_parameters::{LeaveSwarmOptionsBuilder, ListServicesOptions},
};

use crate::runtime::{
    RuntimeError,
    docker::engine::{engine, ignore_missing},
};

/// On a swarm `userctl up --init-swarm` made.
const INITIALISED_LABEL: &str = "io.userctl.initialised";
/// Whether the engine had a `docker_gwbridge` network before (swarm init makes one, and
/// leaving does not remove it).
const GWBRIDGE_LABEL: &str = "io.userctl.gwbridge-existed";
const GWBRIDGE: &str = "docker_gwbridge";

/// The engine as a swarm manager.
#[derive(Debug, Clone)]
pub struct Manager {
    /// This node's id: what keeps the data and holds the published front.
    pub node_id: String,
}

/// Where the engine stands, in the words of the one line `up` says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    Manager {
        node_id: String,
    },
    /// In no swarm.
    Inactive,
    /// A worker: services are created on managers only.
    Worker,
    /// Joining, or in a swarm that lost its quorum, or locked.
    Other(String),
}

pub async fn membership(docker: &Docker) -> Result<Membership, RuntimeError> {
    let info = docker
        .info()
        .await
        .map_err(|err| engine("asking the engine about its swarm", err))?;
    let swarm = info.swarm.unwrap_or_default();
    Ok(match swarm.local_node_state {
        Some(LocalNodeState::ACTIVE) if swarm.control_available == Some(true) => {
            Membership::Manager {
                node_id: swarm.node_id.unwrap_or_default(),
            }
        }
        Some(LocalNodeState::ACTIVE) => Membership::Worker,
        Some(LocalNodeState::INACTIVE) | Some(LocalNodeState::EMPTY) | None => Membership::Inactive,
        Some(other) => Membership::Other(other.to_string()),
    })
}

/// Whether [`ensure_manager`] will succeed, asked before `up` builds or pushes anything, so a
/// refusal comes first and changes nothing.
pub async fn preflight(docker: &Docker, init: bool) -> Result<(), RuntimeError> {
    match membership(docker).await? {
        Membership::Manager { .. } => Ok(()),
        Membership::Inactive if init => Ok(()),
        other => Err(refusal(other)),
    }
}

/// Why `up` cannot use an engine that is not a manager (and may not make it one).
fn refusal(membership: Membership) -> RuntimeError {
    match membership {
        Membership::Worker => RuntimeError::SwarmWorker,
        Membership::Other(state) => RuntimeError::other(
            "using the engine's swarm",
            format!("the engine's swarm state is {state}; see `docker info`"),
        ),
        Membership::Inactive | Membership::Manager { .. } => RuntimeError::SwarmInactive,
    }
}

/// The engine as a manager `up` can create services on: as it is, or with `init`, a new
/// single-node swarm advertising 127.0.0.1 when it is in none. Anything else is one line
/// saying what is there and what to do.
pub async fn ensure_manager(docker: &Docker, init: bool) -> Result<(Manager, bool), RuntimeError> {
    match membership(docker).await? {
        Membership::Manager { node_id } => Ok((Manager { node_id }, false)),
        Membership::Inactive if init => {
            let gwbridge_existed = docker.inspect_network(GWBRIDGE, None).await.is_ok();
            let request = SwarmInitRequest {
                // Only this machine: a single-node swarm needs no address others reach.
                listen_addr: Some("127.0.0.1:2377".to_owned()),
                advertise_addr: Some("127.0.0.1".to_owned()),
                spec: Some(SwarmSpec {
                    labels: Some(HashMap::from([
                        (INITIALISED_LABEL.to_owned(), "true".to_owned()),
                        (GWBRIDGE_LABEL.to_owned(), gwbridge_existed.to_string()),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let node_id = docker
                .init_swarm(request)
                .await
                .map_err(|err| engine("initialising a single-node swarm", err))?;
            Ok((Manager { node_id }, true))
        }
        other => Err(refusal(other)),
    }
}

/// After `down`: when `userctl` initialised this swarm, it is a single node and no service of
/// any project is left in it, the engine leaves it, and the bridge swarm made goes too.
/// Returns what it did, for `down` to say.
pub async fn leave_if_ours_and_empty(docker: &Docker) -> Result<Option<String>, RuntimeError> {
    if !matches!(membership(docker).await?, Membership::Manager { .. }) {
        return Ok(None);
    }
    let swarm = docker
        .inspect_swarm()
        .await
        .map_err(|err| engine("inspecting the swarm", err))?;
    let labels = swarm.spec.and_then(|spec| spec.labels).unwrap_or_default();
    if labels.get(INITIALISED_LABEL).map(String::as_str) != Some("true") {
        return Ok(None);
    }
    let services = docker
        .list_services(None::<ListServicesOptions>)
        .await
        .map_err(|err| engine("listing the swarm's services", err))?;
    let nodes = docker
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .map_err(|err| engine("listing the swarm's nodes", err))?;
    if !services.is_empty() || nodes.len() > 1 {
        return Ok(Some(format!(
            "the swarm userctl initialised stays: {} services and {} nodes are still in it",
            services.len(),
            nodes.len()
        )));
    }
    docker
        .leave_swarm(Some(
            LeaveSwarmOptionsBuilder::default().force(true).build(),
        ))
        .await
        .map_err(|err| engine("leaving the swarm", err))?;
    if labels.get(GWBRIDGE_LABEL).map(String::as_str) == Some("false") {
        ignore_missing(docker.remove_network(GWBRIDGE).await)
            .map_err(|err| engine(format!("removing network {GWBRIDGE}"), err))?;
    }
    Ok(Some(
        "the engine left the single-node swarm `up --init-swarm` made".to_owned(),
    ))
}
