//! The breaker in front of Redis.
//!
//! While Redis answers, every call goes to it (**closed**). After [`FAILURES_TO_OPEN`] calls in
//! a row fail or time out, calls skip Redis and reads go straight to the store (**open**): a
//! dead or hung Redis then costs a read nothing, where without the breaker every read would
//! wait out the Redis timeout first. Once [`COOL_DOWN`] has passed, one probe — a `PING`,
//! never a user's read — goes to Redis (**half-open**); its success closes the breaker, its
//! failure opens it for another cool-down. Any success closes it: Redis answered.
//!
//! [`Machine`] is the state machine alone, with the time passed in, so its tests need neither
//! Redis nor a clock; [`Breaker`] shares one between every request of a cache.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use userctl_proto::cache::v1::RedisBreaker;

/// Consecutive failed or timed-out Redis calls that open the breaker. Three: one failure is
/// a blip, and with the default 100 ms Redis timeout three in a row take at most 300 ms even
/// with one read in flight.
pub const FAILURES_TO_OPEN: u32 = 3;

/// How long the breaker stays open before a probe may try Redis again.
pub const COOL_DOWN: Duration = Duration::from_millis(500);

/// A probe out longer than this is taken as lost, and the next call may start another.
const PROBE_LOST_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl From<State> for RedisBreaker {
    fn from(state: State) -> Self {
        match state {
            State::Closed => Self::Closed,
            State::Open => Self::Open,
            State::HalfOpen => Self::HalfOpen,
        }
    }
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call Redis.
    Call,
    /// Do not call Redis: it has been failing.
    Skip,
    /// Do not call Redis, but start the probe that may close the breaker. Exactly one caller
    /// per cool-down is told this.
    SkipAndProbe,
}

/// The breaker's state and what moves it. Every method takes `now`.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    /// Failures in a row while closed.
    failures: u32,
    /// When the breaker last opened, or the last probe started.
    since: Instant,
    opens: u64,
}

impl Machine {
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Closed,
            failures: 0,
            since: now,
            opens: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Times the breaker has opened (a failed probe opening it again is not counted).
    pub fn opens(&self) -> u64 {
        self.opens
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        let waited = now.saturating_duration_since(self.since);
        match self.state {
            State::Closed => Admission::Call,
            State::Open if waited >= COOL_DOWN => self.start_probe(now),
            State::HalfOpen if waited >= PROBE_LOST_AFTER => self.start_probe(now),
            State::Open | State::HalfOpen => Admission::Skip,
        }
    }

    pub fn succeeded(&mut self) {
        self.state = State::Closed;
        self.failures = 0;
    }

    pub fn failed(&mut self, now: Instant) {
        match self.state {
            State::Closed => {
                self.failures += 1;
                if self.failures >= FAILURES_TO_OPEN {
                    self.opens += 1;
                    self.open(now);
                }
            }
            State::HalfOpen => self.open(now),
            // A call let through before the breaker opened, failing late: already counted.
            State::Open => {}
        }
    }

    fn start_probe(&mut self, now: Instant) -> Admission {
        self.state = State::HalfOpen;
        self.since = now;
        Admission::SkipAndProbe
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open;
        self.failures = 0;
        self.since = now;
    }
}

/// One cache's breaker, shared by its requests and its probe.
#[derive(Debug)]
pub struct Breaker {
    machine: Mutex<Machine>,
    /// Redis calls not made because the breaker was open.
    skipped: AtomicU64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            machine: Mutex::new(Machine::new(Instant::now())),
            skipped: AtomicU64::new(0),
        }
    }
}

impl Breaker {
    pub fn admit(&self) -> Admission {
        let admission = self.machine().admit(Instant::now());
        if admission != Admission::Call {
            self.skipped.fetch_add(1, Relaxed);
        }
        admission
    }

    /// [`Self::admit`] for the idle probe, which skips no request.
    pub fn admit_probe(&self) -> Admission {
        self.machine().admit(Instant::now())
    }

    pub fn succeeded(&self) {
        self.machine().succeeded();
    }

    pub fn failed(&self) {
        self.machine().failed(Instant::now());
    }

    /// The state, the times it opened, and the calls it skipped.
    pub fn snapshot(&self) -> (State, u64, u64) {
        let machine = self.machine();
        (machine.state(), machine.opens(), self.skipped.load(Relaxed))
    }

    fn machine(&self) -> std::sync::MutexGuard<'_, Machine> {
        // Every transition leaves the machine whole, so a panic elsewhere cannot poison it
        // into a state that matters.
        self.machine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn opened(at: Instant) -> Machine {
        let mut machine = Machine::new(at);
        for _ in 0..FAILURES_TO_OPEN {
            machine.failed(at);
        }
        machine
    }

    #[test]
    fn a_closed_breaker_lets_every_call_through() {
        let now = Instant::now();
        let mut machine = Machine::new(now);
        assert_eq!(machine.admit(now), Admission::Call);
        assert_eq!(machine.state(), State::Closed);
    }

    #[test]
    fn it_opens_after_failures_in_a_row_and_a_success_between_starts_the_count_again() {
        let now = Instant::now();
        let mut machine = Machine::new(now);
        for _ in 1..FAILURES_TO_OPEN {
            machine.failed(now);
        }
        machine.succeeded();
        for _ in 1..FAILURES_TO_OPEN {
            machine.failed(now);
        }
        assert_eq!(machine.state(), State::Closed);
        machine.failed(now);
        assert_eq!(machine.state(), State::Open);
        assert_eq!(machine.opens(), 1);
    }

    #[test]
    fn an_open_breaker_skips_redis_until_the_cool_down_ends_then_probes_once() {
        let start = Instant::now();
        let mut machine = opened(start);
        assert_eq!(machine.admit(start), Admission::Skip);
        assert_eq!(machine.admit(start + COOL_DOWN - MS), Admission::Skip);
        assert_eq!(machine.admit(start + COOL_DOWN), Admission::SkipAndProbe);
        assert_eq!(machine.state(), State::HalfOpen);
        // One probe at a time: the others keep skipping.
        assert_eq!(machine.admit(start + COOL_DOWN + MS), Admission::Skip);
        assert_eq!(machine.admit(start + 2 * COOL_DOWN), Admission::Skip);
    }

    #[test]
    fn a_probe_that_succeeds_closes_it() {
        let start = Instant::now();
        let mut machine = opened(start);
        machine.admit(start + COOL_DOWN);
        machine.succeeded();
        assert_eq!(machine.state(), State::Closed);
        assert_eq!(machine.admit(start + COOL_DOWN + MS), Admission::Call);
        // It takes failures in a row again to open.
        machine.failed(start + COOL_DOWN + MS);
        assert_eq!(machine.state(), State::Closed);
    }

    #[test]
    fn a_probe_that_fails_opens_it_for_another_cool_down() {
        let start = Instant::now();
        let mut machine = opened(start);
        let probed = start + COOL_DOWN;
        machine.admit(probed);
        machine.failed(probed + 10 * MS);
        assert_eq!(machine.state(), State::Open);
        assert_eq!(machine.opens(), 1, "a failed probe is not a new opening");
        assert_eq!(machine.admit(probed + COOL_DOWN), Admission::Skip);
        assert_eq!(
            machine.admit(probed + 10 * MS + COOL_DOWN),
            Admission::SkipAndProbe
        );
    }

    #[test]
    fn a_lost_probe_does_not_hold_it_half_open_for_ever() {
        let start = Instant::now();
        let mut machine = opened(start);
        machine.admit(start + COOL_DOWN);
        assert_eq!(
            machine.admit(start + COOL_DOWN + PROBE_LOST_AFTER),
            Admission::SkipAndProbe
        );
    }

    #[test]
    fn late_failures_of_calls_let_through_before_it_opened_change_nothing() {
        let start = Instant::now();
        let mut machine = opened(start);
        for _ in 0..10 {
            machine.failed(start + 400 * MS);
        }
        assert_eq!(machine.state(), State::Open);
        // The cool-down still counts from when it opened.
        assert_eq!(machine.admit(start + COOL_DOWN), Admission::SkipAndProbe);
    }

    #[test]
    fn the_shared_breaker_counts_the_calls_it_skipped() {
        let breaker = Breaker::default();
        for _ in 0..FAILURES_TO_OPEN {
            breaker.failed();
        }
        assert_eq!(breaker.admit(), Admission::Skip);
        assert_eq!(breaker.admit(), Admission::Skip);
        assert_eq!(breaker.snapshot(), (State::Open, 1, 2));
    }
}
