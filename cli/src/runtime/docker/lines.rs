//! `up`'s progress, one line per replica, made up front so they show in start order; a
//! service with several replicas says which one each message is about.

use super::Found;
use crate::{
    runtime::progress::{Progress, ServiceProgress},
    stack::{Replicas, Service},
};

/// One progress line per replica, made up front so they show in start order. The first is
/// Postgres's, which every stack shows (as unused with SQLite), so a line is always there.
pub struct Lines {
    first: ReplicaLine,
    rest: Vec<(Service, u16, ReplicaLine)>,
}

impl Lines {
    pub fn new(progress: &Progress, replicas: Replicas) -> Self {
        let line = |service: Service, replica: u16, count: u16| ReplicaLine {
            progress: progress.service(service),
            prefix: (count > 1).then(|| format!("replica {replica}: ")),
        };
        let first = line(Service::Postgres, 1, 1);
        let rest = Service::ALL
            .into_iter()
            .filter(|service| *service != Service::Postgres)
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
            .map(|(service, replica, count)| (service, replica, line(service, replica, count)))
            .collect();
        Self { first, rest }
    }

    /// The line of one replica (of the service's first when there is no such replica, of
    /// Postgres when the service has none).
    pub fn replica(&self, service: Service, replica: u16) -> &ReplicaLine {
        if service == Service::Postgres {
            return &self.first;
        }
        let of_service = || self.rest.iter().filter(|(owner, _, _)| *owner == service);
        of_service()
            .find(|(_, number, _)| *number == replica)
            .or_else(|| of_service().next())
            .map_or(&self.first, |(_, _, line)| line)
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
