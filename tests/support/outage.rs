//! The report of a dependency outage under load: reads the cache can answer must never fail,
//! reads that need the stopped dependency may fail while it is down, but only as the
//! gateway's documented UNAVAILABLE, and must succeed while it is up. Printed and checked the
//! same way for every dependency the fault tests stop.

use std::time::Instant;

use tonic::Code;

use crate::load::{Call, Summary, failures};

/// When a dependency was down, as the test saw it: from the moment it was told to stop until
/// the moment it was back.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub from: Instant,
    pub until: Instant,
}

impl Outage {
    /// Whether `call` started while the dependency was down.
    pub fn started_during(&self, call: &Call) -> bool {
        call.started >= self.from && call.started < self.until
    }

    /// Whether `call` may have felt the outage: still running when it began, or started
    /// before it ended (a stopping or restarting dependency counts as down).
    pub fn touched(&self, call: &Call) -> bool {
        call.started + call.took >= self.from && call.started < self.until
    }
}

/// Two loads cut at an outage of `dependency`: `cached` reads the cache answers, `needing_it`
/// reads that miss the cache and need the dependency.
pub struct OutageReport<'a> {
    dependency: &'static str,
    cached: &'a [Call],
    cached_during: Summary,
    needing_it_up: Vec<&'a Call>,
    needing_it_down: Vec<&'a Call>,
}

impl<'a> OutageReport<'a> {
    pub fn new(
        dependency: &'static str,
        outage: Outage,
        cached: &'a [Call],
        needing_it: &'a [Call],
    ) -> Self {
        let (needing_it_down, needing_it_up) =
            needing_it.iter().partition(|call| outage.touched(call));
        Self {
            dependency,
            cached,
            cached_during: Summary::of(cached.iter().filter(|call| outage.started_during(call))),
            needing_it_up,
            needing_it_down,
        }
    }

    /// Cached reads that started while the dependency was down.
    pub fn cached_during(&self) -> Summary {
        self.cached_during
    }

    /// Reads needing the dependency that may have felt the outage.
    pub fn needing_it_down(&self) -> &[&'a Call] {
        &self.needing_it_down
    }

    pub fn print(&self) {
        let dependency = self.dependency;
        let cached_during = format!("cached whoami, {dependency} stopped:");
        let width = cached_during.len() + 2;
        println!(
            "{:<width$}{}",
            "cached whoami, whole run:",
            Summary::of(self.cached)
        );
        println!("{cached_during:<width$}{}", self.cached_during);
        println!(
            "uncached whoami (needs the {dependency}): up {}; stopping, down or restarting {}",
            Summary::of(self.needing_it_up.iter().copied()),
            Summary::of(self.needing_it_down.iter().copied())
        );
    }

    /// Every cached read was served, whatever the dependency was doing.
    #[track_caller]
    pub fn assert_cached_reads_never_failed(&self) {
        let failed = failures(self.cached);
        assert!(
            failed.is_empty(),
            "cached accounts are served without the {}: {:?}",
            self.dependency,
            &failed[..failed.len().min(5)]
        );
    }

    /// Reads that need the dependency succeeded while it was up, and failed, if at all, only
    /// with `code` and `message` while it was stopping, down or restarting.
    #[track_caller]
    pub fn assert_reads_needing_it_failed_only_as(&self, code: Code, message: &str) {
        for call in &self.needing_it_down {
            if let Err(status) = &call.result {
                assert_eq!(
                    (status.code(), status.message()),
                    (code, message),
                    "a read that needs a stopping or stopped {}: {status:?}",
                    self.dependency
                );
            }
        }
        for call in &self.needing_it_up {
            assert!(
                call.result.is_ok(),
                "with the {} up: {:?}",
                self.dependency,
                call.result
            );
        }
    }
}
