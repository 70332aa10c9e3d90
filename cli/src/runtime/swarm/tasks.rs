//! What the swarm says about a service's tasks, in the stack's words: a status row per task,
//! whether a service has converged, and where its published ports answer. No I/O here.

use std::collections::HashMap;

use bollard::models::{NodeState, Task, TaskState};

use crate::{
    runtime::docker::state,
    stack::{Health, Service, ServiceStatus, State, loopback_url},
};

/// A swarm node as `status` shows it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub hostname: String,
    /// The address other nodes reach it at.
    pub addr: Option<String>,
    pub down: bool,
}

impl NodeInfo {
    pub fn from_node(node: &bollard::models::Node) -> Option<(String, Self)> {
        let id = node.id.clone()?;
        let status = node.status.as_ref();
        Some((
            id,
            Self {
                hostname: node
                    .description
                    .as_ref()
                    .and_then(|description| description.hostname.clone())
                    .unwrap_or_default(),
                addr: status.and_then(|status| status.addr.clone()),
                down: status.and_then(|status| status.state) == Some(NodeState::DOWN),
            },
        ))
    }
}

pub fn state_of(task: &Task) -> Option<TaskState> {
    task.status.as_ref()?.state
}

/// Whether the swarm wants this task running (a task being replaced or removed does not).
pub fn wanted(task: &Task) -> bool {
    task.desired_state == Some(TaskState::RUNNING)
}

/// A task the swarm has lost with its node: last seen running there, and kept in `status`
/// (as unknown, on `host (down)`) until the node returns or is removed, beside its replacement.
pub fn lost(task: &Task, nodes: &HashMap<String, NodeInfo>) -> bool {
    state_of(task) == Some(TaskState::RUNNING)
        && task
            .node_id
            .as_deref()
            .and_then(|node| nodes.get(node))
            .is_some_and(|node| node.down)
}

/// Running, and so healthy: with a health check, the swarm counts a task as running only once
/// the check has passed.
pub fn serving(task: &Task) -> bool {
    wanted(task) && state_of(task) == Some(TaskState::RUNNING)
}

/// The host port a task publishes for `target`, when it publishes one.
pub fn published_port(task: &Task, target: u16) -> Option<u16> {
    task.status
        .as_ref()?
        .port_status
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|port| port.target_port == Some(i64::from(target)))
        .and_then(|port| port.published_port)
        .and_then(|port| u16::try_from(port).ok())
}

/// Where a task's port answers from this machine: loopback on the node `userctl` runs on,
/// the node's own address elsewhere (host-mode ports listen on every interface).
pub fn address(
    task: &Task,
    target: u16,
    home_node: &str,
    nodes: &HashMap<String, NodeInfo>,
) -> Option<String> {
    let port = published_port(task, target)?;
    let node = task.node_id.as_deref()?;
    if node == home_node {
        return Some(loopback_url(port));
    }
    let addr = nodes.get(node)?.addr.as_deref()?;
    Some(format!("http://{addr}:{port}"))
}

/// One `status` row for a task the swarm wants running.
pub fn status_of(
    service: Service,
    task: &Task,
    grpc_port: Option<u16>,
    home_node: &str,
    nodes: &HashMap<String, NodeInfo>,
) -> ServiceStatus {
    let node = task.node_id.as_deref().and_then(|id| nodes.get(id));
    let lost = node.is_some_and(|node| node.down);
    let (state, health) = if lost {
        // The node stopped answering: what its task does is not known until the swarm
        // replaces it elsewhere.
        (State::Unknown, Health::None)
    } else {
        match state_of(task) {
            Some(TaskState::RUNNING) => (State::Running, Health::Healthy),
            Some(
                TaskState::NEW
                | TaskState::ALLOCATED
                | TaskState::PENDING
                | TaskState::ASSIGNED
                | TaskState::ACCEPTED
                | TaskState::PREPARING
                | TaskState::READY
                | TaskState::STARTING,
            ) => (State::Created, Health::Starting),
            Some(TaskState::COMPLETE | TaskState::SHUTDOWN) => (State::Exited, Health::None),
            Some(TaskState::FAILED | TaskState::REJECTED) => (State::Dead, Health::None),
            Some(TaskState::REMOVE) => (State::Removing, Health::None),
            _ => (State::Unknown, Health::None),
        }
    };
    let status = task.status.as_ref();
    let container = status
        .and_then(|status| status.container_status.as_ref())
        .and_then(|container| container.container_id.clone());
    let running = state == State::Running;
    ServiceStatus {
        service,
        replica: task
            .slot
            .and_then(|slot| u16::try_from(slot).ok())
            .unwrap_or(1),
        id: container.or_else(|| task.id.clone()),
        state,
        health,
        address: grpc_port
            .filter(|_| running)
            .and_then(|port| address(task, port, home_node, nodes)),
        restarts: None,
        uptime_secs: status
            .and_then(|status| status.timestamp.as_deref())
            .filter(|_| running)
            .and_then(state::uptime_secs),
        node: node.map(|node| {
            if lost {
                format!("{} (down)", node.hostname)
            } else {
                node.hostname.clone()
            }
        }),
    }
}

/// The last error the swarm gave for a task of the service (a failed start, a rejected
/// placement), for the error `up` prints when a service does not converge.
pub fn last_error(tasks: &[Task]) -> Option<String> {
    tasks
        .iter()
        .filter_map(|task| {
            let status = task.status.as_ref()?;
            let err = status.err.as_deref().filter(|err| !err.is_empty())?;
            Some((status.timestamp.clone().unwrap_or_default(), err.to_owned()))
        })
        .max()
        .map(|(_, err)| err)
}

#[cfg(test)]
mod tests {
    use bollard::models::{EndpointPortConfig, PortStatus, TaskStatus};

    use super::*;

    fn task(state: TaskState, node: &str, port: Option<i64>) -> Task {
        Task {
            id: Some("task1".into()),
            slot: Some(2),
            node_id: Some(node.into()),
            desired_state: Some(TaskState::RUNNING),
            status: Some(TaskStatus {
                state: Some(state),
                port_status: Some(PortStatus {
                    ports: Some(vec![EndpointPortConfig {
                        target_port: Some(50052),
                        published_port: port,
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn nodes(down: bool) -> HashMap<String, NodeInfo> {
        HashMap::from([
            (
                "here".to_owned(),
                NodeInfo {
                    hostname: "laptop".into(),
                    addr: Some("10.0.0.1".into()),
                    down: false,
                },
            ),
            (
                "there".to_owned(),
                NodeInfo {
                    hostname: "worker".into(),
                    addr: Some("10.0.0.2".into()),
                    down,
                },
            ),
        ])
    }

    #[test]
    fn a_running_task_is_healthy_and_answers_on_loopback_here_and_at_its_node_elsewhere() {
        let here = status_of(
            Service::Cache,
            &task(TaskState::RUNNING, "here", Some(30001)),
            Some(50052),
            "here",
            &nodes(false),
        );
        assert_eq!(here.replica, 2);
        assert_eq!((here.state, here.health), (State::Running, Health::Healthy));
        assert_eq!(here.address.as_deref(), Some("http://127.0.0.1:30001"));
        assert_eq!(here.node.as_deref(), Some("laptop"));
        let there = status_of(
            Service::Cache,
            &task(TaskState::RUNNING, "there", Some(30002)),
            Some(50052),
            "here",
            &nodes(false),
        );
        assert_eq!(there.address.as_deref(), Some("http://10.0.0.2:30002"));
    }

    #[test]
    fn a_task_on_a_lost_node_is_unknown_and_its_node_says_down() {
        let row = status_of(
            Service::Cache,
            &task(TaskState::RUNNING, "there", Some(30002)),
            Some(50052),
            "here",
            &nodes(true),
        );
        assert_eq!((row.state, row.health), (State::Unknown, Health::None));
        assert_eq!(row.node.as_deref(), Some("worker (down)"));
        assert_eq!(row.address, None);
    }

    #[test]
    fn a_starting_task_is_not_yet_serving() {
        let starting = task(TaskState::STARTING, "here", None);
        assert!(!serving(&starting));
        let row = status_of(
            Service::Cache,
            &starting,
            Some(50052),
            "here",
            &nodes(false),
        );
        assert_eq!((row.state, row.health), (State::Created, Health::Starting));
        assert!(serving(&task(TaskState::RUNNING, "here", None)));
    }
}
