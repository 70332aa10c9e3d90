//! What `up` does to a running stack when counts change: which containers are extra, and
//! what it changed, for the error when it stops half-way (a scale that fails leaves the stack
//! serving as it was and says what it did).

use std::collections::HashSet;

use super::{Found, replica_label, spec::ContainerSpec};
use crate::stack::{Replicas, Service};

/// The containers beyond the counts: replicas numbered past their service's count, gateways
/// before caches before stores (callers before what they call), highest replica first.
pub fn extras(existing: &[Found], replicas: Replicas) -> Vec<Found> {
    let mut extras: Vec<Found> = existing
        .iter()
        .filter(|found| {
            found.service.is_some_and(|service| {
                Service::SCALABLE.contains(&service) && found.replica > replicas.of(service)
            })
        })
        .cloned()
        .collect();
    extras.sort_by_key(|found| {
        let order = Service::SCALABLE
            .iter()
            .position(|service| Some(*service) == found.service);
        (std::cmp::Reverse(order), std::cmp::Reverse(found.replica))
    });
    extras
}

/// What `up` changed in a stack that was running, for the error when it stops half-way.
pub struct Changes {
    pub running_before: bool,
    existing: HashSet<String>,
    pub added: Vec<String>,
    pub restarted: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn new(existing: &[Found]) -> Self {
        Self {
            running_before: existing
                .iter()
                .any(|found| found.service.is_some_and(Service::is_usersvc)),
            existing: existing.iter().map(|found| found.name.clone()).collect(),
            added: Vec::new(),
            restarted: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// `spec`'s container was (re)created or started.
    pub fn started(&mut self, spec: &ContainerSpec) {
        let label = replica_label(spec.service, spec.replica);
        if self.existing.contains(&spec.name) {
            self.restarted.push(label);
        } else {
            self.added.push(label);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.restarted.is_empty() && self.removed.is_empty()
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            ("added", &self.added),
            ("started or recreated", &self.restarted),
            ("removed", &self.removed),
        ]
        .into_iter()
        .filter(|(_, what)| !what.is_empty())
        .map(|(verb, what)| format!("{verb} {}", what.join(", ")))
        .collect();
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(service: Service, replica: u16) -> Found {
        Found {
            service: Some(service),
            replica,
            name: format!("t-{service}-{replica}"),
        }
    }

    #[test]
    fn extras_go_callers_first_and_highest_replica_first() {
        let existing = [
            found(Service::Store, 1),
            found(Service::Store, 2),
            found(Service::Cache, 1),
            found(Service::Cache, 2),
            found(Service::Cache, 3),
            found(Service::Gateway, 1),
            found(Service::Gateway, 2),
            found(Service::Redis, 1),
        ];
        let replicas = Replicas {
            gateway: 1,
            cache: 1,
            store: 2,
        };
        let order: Vec<String> = extras(&existing, replicas)
            .iter()
            .map(Found::label)
            .collect();
        assert_eq!(order, ["gateway.2", "cache.3", "cache.2"]);
    }

    #[test]
    fn changes_name_what_was_added_restarted_and_removed() {
        let mut changes = Changes::new(&[found(Service::Cache, 1)]);
        assert!(changes.running_before && changes.is_empty());
        changes.added.push("cache.2".into());
        changes.removed.push("proxy.1".into());
        assert_eq!(changes.to_string(), "added cache.2; removed proxy.1");
    }
}
