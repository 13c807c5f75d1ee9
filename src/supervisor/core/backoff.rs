//! Crash backoff: a slot whose worker keeps dying soon after start is
//! restarted after a delay that doubles per quick death, so a broken
//! deploy does not fork in a tight loop; a first start whose workers all
//! die that way gives up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::super::notify::Note;
use super::super::system::Os;
use super::{Phase, Supervisor};
use crate::exit::Exit;

/// A worker that dies within this long of starting counts as crash-looping.
pub(super) const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// First restart delay of a crash-looping slot; doubles per quick death.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Quick deaths of one slot before a first start gives up with
/// [`Exit::BootFailure`].
const BOOT_ATTEMPTS: u32 = 3;

/// Restart pacing of one slot.
#[derive(Default)]
struct Slot {
    /// Quick deaths in a row; reset when a worker of the slot gets ready.
    quick_deaths: u32,
    /// No new worker for the slot before this.
    not_before: Option<Instant>,
}

/// Restart pacing of every slot of the serving generation.
#[derive(Default)]
pub(in crate::supervisor) struct Backoff(HashMap<usize, Slot>);

impl Backoff {
    /// Records a quick death of `slot`'s worker: (deaths in a row, delay
    /// before the next start).
    pub fn quick_death(&mut self, slot: usize, now: Instant) -> (u32, Duration) {
        let entry = self.0.entry(slot).or_default();
        entry.quick_deaths += 1;
        let delay = delay(entry.quick_deaths);
        entry.not_before = Some(now + delay);
        (entry.quick_deaths, delay)
    }

    /// Whether `slot` must not be started yet.
    pub fn waiting(&self, slot: usize, now: Instant) -> bool {
        self.0
            .get(&slot)
            .and_then(|s| s.not_before)
            .is_some_and(|t| t > now)
    }

    /// `slot` is healthy again (a worker got ready, or died of something
    /// other than a crash loop).
    pub fn forget(&mut self, slot: usize) {
        self.0.remove(&slot);
    }

    /// A new generation serves: its slots start with a clean record.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Quick deaths of the slots currently looping, for `STATUS=`.
    pub(in crate::supervisor) fn crash_loop(&self) -> u32 {
        self.0
            .values()
            .filter(|s| s.quick_deaths > 1)
            .map(|s| s.quick_deaths)
            .sum()
    }
}

impl<O: Os> Supervisor<O> {
    /// Records a worker of the serving generation dying soon after start,
    /// and paces the slot's next start.
    pub(super) fn quick_death(&mut self, slot: usize, was_ready: bool, now: Instant) {
        let (deaths, delay) = self.backoff.quick_death(slot, now);
        if deaths > 1 {
            let delay_ms = delay.as_millis() as u64;
            tracing::warn!(
                slot,
                quick_deaths = deaths,
                delay_ms,
                "worker crash loop; restart delayed: slot {slot} died {deaths} times in a row soon after start; next start in {delay_ms} ms"
            );
        }
        if matches!(self.phase, Phase::Booting { .. }) && !was_ready && deaths >= BOOT_ATTEMPTS {
            tracing::error!(
                slot,
                attempts = deaths,
                "no worker could start; giving up (exit code 3): slot {slot} failed {deaths} starts"
            );
            self.give_up();
        }
        self.publish(true, now);
    }

    /// Ends a first start that cannot succeed: kills what is left and exits
    /// with [`Exit::BootFailure`].
    pub(super) fn give_up(&mut self) {
        for pid in self.workers.pids(|_| true) {
            self.os.signal(pid, libc::SIGKILL);
        }
        self.os
            .notify(Note::Status("failed: no worker could start".into()));
        self.exit = Some(Exit::BootFailure);
    }
}

/// The delay after `quick_deaths` deaths in a row.
fn delay(quick_deaths: u32) -> Duration {
    let exp = quick_deaths.saturating_sub(1).min(16);
    (BACKOFF_MIN * 2u32.pow(exp)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_250_ms_and_stops_at_30_s() {
        let delays: Vec<u64> = (1..=9).map(|n| delay(n).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        // However many deaths, never past the cap, and no overflow.
        assert_eq!(delay(0), BACKOFF_MIN);
        assert_eq!(delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_slot_waits_out_its_delay_and_only_loops_count() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        assert_eq!(backoff.quick_death(1, now), (1, BACKOFF_MIN));
        assert_eq!(backoff.crash_loop(), 0);
        assert_eq!(backoff.quick_death(1, now).0, 2);
        assert!(backoff.waiting(1, now + Duration::from_millis(499)));
        assert!(!backoff.waiting(1, now + Duration::from_millis(500)));
        assert!(!backoff.waiting(2, now));
        backoff.quick_death(2, now);
        backoff.quick_death(2, now);
        assert_eq!(backoff.crash_loop(), 4);
        backoff.forget(1);
        assert!(!backoff.waiting(1, now));
        assert_eq!(backoff.crash_loop(), 2);
        backoff.clear();
        assert_eq!(backoff.crash_loop(), 0);
    }
}
