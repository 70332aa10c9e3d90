//! `up`'s progress, one line per replica, made up front so they show in start order; a
//! service with several replicas says which one each message is about.

use super::Found;
use crate::{
    runtime::progress::{Progress, ServiceProgress},
    stack::{Replicas, Service},
};

/// One progress line per replica, made up front so they show in start order.
pub struct Lines(Vec<(Service, u16, ReplicaLine)>);

impl Lines {
    pub fn new(progress: &Progress, replicas: Replicas) -> Self {
        let lines = Service::ALL
            .into_iter()
            .flat_map(|service| {
                let count = replicas.of(service);
                // The proxy has a line only when it runs; every other service has one even
                // when unused, to say so.
                let shown = if service == Service::Proxy {
                    count
                } else {
                    count.max(1)
                };
                (1..=shown).map(move |replica| (service, replica, count))
            })
            .map(|(service, replica, count)| {
                let prefix = (count > 1).then(|| format!("replica {replica}: "));
                (
                    service,
                    replica,
                    ReplicaLine {
                        progress: progress.service(service),
                        prefix,
                    },
                )
            })
            .collect();
        Self(lines)
    }

    /// The line of one replica (of the first when there is no such replica).
    pub fn replica(&self, service: Service, replica: u16) -> &ReplicaLine {
        let of_service = || self.0.iter().filter(|(owner, _, _)| *owner == service);
        of_service()
            .find(|(_, number, _)| *number == replica)
            .or_else(|| of_service().next())
            .or_else(|| self.0.first())
            .map(|(_, _, line)| line)
            .unwrap_or_else(|| unreachable!("a line per service"))
    }

    /// A service's first line, for what concerns all its replicas (its image).
    pub fn get(&self, service: Service) -> &ServiceProgress {
        &self.replica(service, 1).progress
    }
}

/// A service's progress line, its messages prefixed with the replica when it has several.
pub struct ReplicaLine {
    progress: ServiceProgress,
    prefix: Option<String>,
}

impl ReplicaLine {
    fn text(&self, message: &str) -> String {
        format!("{}{message}", self.prefix.as_deref().unwrap_or(""))
    }

    pub fn phase(&self, message: &str) {
        self.progress.phase(&self.text(message));
    }

    pub fn done(&self, message: &str) {
        self.progress.done(&self.text(message));
    }

    pub fn note(&self, message: &str) {
        self.progress.note(message);
    }

    pub fn fail(&self, message: &str) {
        self.progress.fail(&self.text(message));
    }
}

impl Lines {
    /// A note about a container `up` found (one it removes), on its service's first line.
    pub fn note_on(&self, found: &Found, message: &str) {
        if let Some(service) = found.service {
            self.replica(service, 1)
                .note(&format!("{}: {message}", found.label()));
        }
    }
}
