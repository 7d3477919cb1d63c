//! The config renderer's decisions, as data and pure functions of time:
//!
//! * quiescence: a new render is delivered only once it has stayed the same for the
//!   file's `render_wait.min`, or has kept changing for `render_wait.max` (as
//!   consul-template's `wait`), so a burst of changes gives one delivery;
//! * rolling restarts: of a server's instances whose new files restart them, `batch` at
//!   a time get them; the next wait until those are running and healthy again (or the
//!   check's start period has passed);
//! * flapping: an instance restarted by config changes more than `max_per_minute` times
//!   in a minute gets no more of them (its last files are kept) until the next apply or
//!   restart.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// (app, server, node)
pub type InstanceKey = (String, String, String);
/// An instance's file.
pub type FileKey = (InstanceKey, String);

const MINUTE_MS: i64 = 60_000;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A render that differs from what was delivered, waiting to settle.
#[derive(Clone, Debug)]
struct Quiet {
    candidate: String,
    /// Since when the render has been `candidate`.
    since: i64,
    /// Since when it has differed from what was delivered.
    first_diff: i64,
}

/// A config restart delivered and not finished yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub at_ms: i64,
    /// The instance's restart count when its files were delivered: a higher count
    /// means it has restarted.
    pub restarts_before: i64,
    /// After this long it no longer holds up the next batch, restarted or not.
    pub limit_ms: i64,
}

/// What an instance reports now, for deciding whether its config restart is over.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    pub restarts: i64,
    /// Running, and healthy (or without a check).
    pub ready: bool,
}

/// The outcome of [`Planner::settle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// The render is what was delivered: nothing to do.
    Same,
    /// Still changing: ask again at this time.
    Wait(i64),
    /// Settled: deliver this.
    Deliver(String),
}

#[derive(Default)]
pub struct Planner {
    quiet: HashMap<FileKey, Quiet>,
    /// When config changes restarted each instance, within the last minute.
    history: HashMap<InstanceKey, VecDeque<i64>>,
    /// The last config restart this replica delivered to each instance, and whether it
    /// is over.
    in_flight: HashMap<InstanceKey, (InFlight, bool)>,
}

impl Planner {
    /// Whether a file's new render has settled.
    pub fn settle(
        &mut self,
        key: &FileKey,
        candidate: &str,
        delivered: Option<&str>,
        wait: (Duration, Duration),
        now: i64,
    ) -> Settle {
        if delivered == Some(candidate) {
            self.quiet.remove(key);
            return Settle::Same;
        }
        let q = self.quiet.entry(key.clone()).or_insert_with(|| Quiet {
            candidate: candidate.to_string(),
            since: now,
            first_diff: now,
        });
        if q.candidate != candidate {
            q.candidate = candidate.to_string();
            q.since = now;
        }
        let (min, max) = (ms(wait.0), ms(wait.1));
        if now - q.since >= min || now - q.first_diff >= max {
            Settle::Deliver(q.candidate.clone())
        } else {
            Settle::Wait((q.since + min).min(q.first_diff + max))
        }
    }

    /// A file was delivered: its render starts over.
    pub fn delivered(&mut self, key: &FileKey) {
        self.quiet.remove(key);
    }

    /// Forgets the state of files and instances that no longer exist.
    pub fn retain(&mut self, exists: impl Fn(&InstanceKey) -> bool) {
        self.quiet.retain(|(i, _), _| exists(i));
        self.history.retain(|i, _| exists(i));
        self.in_flight.retain(|i, _| exists(i));
    }

    /// Whether config changes may restart the instance once more now: false when they
    /// already did `max_per_minute` times within the last minute.
    pub fn may_restart(&mut self, key: &InstanceKey, max_per_minute: u32, now: i64) -> bool {
        let h = self.history.entry(key.clone()).or_default();
        while h.front().is_some_and(|t| now - t >= MINUTE_MS) {
            h.pop_front();
        }
        h.len() < max_per_minute as usize
    }

    /// A config restart was delivered.
    pub fn restarting(&mut self, key: &InstanceKey, flight: InFlight) {
        self.history
            .entry(key.clone())
            .or_default()
            .push_back(flight.at_ms);
        self.in_flight.insert(key.clone(), (flight, false));
    }

    /// Whether the instance's config restart (if any) still holds up the next batch;
    /// a finished one is forgotten. `recorded_at_ms` is the database's record of the last
    /// delivery, for restarts another replica delivered (their limit applies).
    pub fn in_flight(
        &mut self,
        key: &InstanceKey,
        observed: Observed,
        recorded_at_ms: i64,
        limit_ms: i64,
        now: i64,
    ) -> bool {
        let (flight, over) = match self.in_flight.get_mut(key) {
            Some((f, over)) if f.at_ms >= recorded_at_ms => (*f, over),
            // Delivered by another replica (before this one led): only the time limit
            // tells.
            _ => return recorded_at_ms > 0 && now - recorded_at_ms < limit_ms,
        };
        if *over {
            return false;
        }
        let restarted = observed.restarts > flight.restarts_before;
        *over = (restarted && observed.ready) || now - flight.at_ms >= flight.limit_ms;
        !*over
    }

    /// The instances in a config restart now.
    pub fn restarting_now(&self) -> impl Iterator<Item = &InstanceKey> {
        self.in_flight
            .iter()
            .filter(|(_, (_, over))| !over)
            .map(|(k, _)| k)
    }
}

/// Of the instances waiting for a config restart (by ordinal), those that may go now
/// with `busy` of their server already restarting.
pub fn next_batch<T: Clone>(waiting: &[(u32, T)], batch: u32, busy: usize) -> Vec<T> {
    let mut sorted: Vec<&(u32, T)> = waiting.iter().collect();
    sorted.sort_by_key(|(ordinal, _)| *ordinal);
    let free = (batch as usize).saturating_sub(busy);
    sorted
        .into_iter()
        .take(free)
        .map(|(_, t)| t.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: &str) -> InstanceKey {
        ("chain0".into(), "gw".into(), node.into())
    }

    fn file(node: &str) -> FileKey {
        (key(node), "peers.txt".into())
    }

    const WAIT: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(5));

    #[test]
    fn a_burst_of_changes_gives_one_delivery() {
        let mut p = Planner::default();
        let f = file("a");
        assert_eq!(p.settle(&f, "x", Some("x"), WAIT, 0), Settle::Same);
        assert_eq!(p.settle(&f, "y", Some("x"), WAIT, 0), Settle::Wait(500));
        assert_eq!(p.settle(&f, "z", Some("x"), WAIT, 300), Settle::Wait(800));
        assert_eq!(p.settle(&f, "z", Some("x"), WAIT, 799), Settle::Wait(800));
        assert_eq!(
            p.settle(&f, "z", Some("x"), WAIT, 800),
            Settle::Deliver("z".into())
        );
        p.delivered(&f);
        assert_eq!(p.settle(&f, "z", Some("z"), WAIT, 900), Settle::Same);
    }

    #[test]
    fn a_change_that_comes_back_within_the_wait_is_no_change() {
        let mut p = Planner::default();
        let f = file("a");
        assert_eq!(p.settle(&f, "blip", Some("x"), WAIT, 0), Settle::Wait(500));
        assert_eq!(p.settle(&f, "x", Some("x"), WAIT, 200), Settle::Same);
        // The next difference waits the whole min again.
        assert_eq!(p.settle(&f, "y", Some("x"), WAIT, 300), Settle::Wait(800));
    }

    #[test]
    fn a_render_that_never_settles_is_delivered_at_max() {
        let mut p = Planner::default();
        let f = file("a");
        let mut now = 0;
        let mut last = Settle::Same;
        for i in 0..30 {
            last = p.settle(&f, &format!("v{i}"), Some("x"), WAIT, now);
            if matches!(last, Settle::Deliver(_)) {
                break;
            }
            now += 200;
        }
        assert_eq!(now, 5000, "delivered after max, not min");
        assert_eq!(last, Settle::Deliver("v25".into()));
    }

    #[test]
    fn flapping_stops_after_max_per_minute() {
        let mut p = Planner::default();
        let k = key("a");
        for i in 0..5 {
            assert!(p.may_restart(&k, 5, i * 1000), "restart {i}");
            p.restarting(
                &k,
                InFlight {
                    at_ms: i * 1000,
                    restarts_before: i,
                    limit_ms: 10,
                },
            );
        }
        assert!(!p.may_restart(&k, 5, 5000), "the 6th within a minute");
        assert!(p.may_restart(&k, 5, 60_000), "a minute after the first");
    }

    #[test]
    fn a_restart_is_over_when_the_instance_is_back_or_the_limit_passed() {
        let mut p = Planner::default();
        let k = key("a");
        let flight = InFlight {
            at_ms: 1000,
            restarts_before: 3,
            limit_ms: 10_000,
        };
        p.restarting(&k, flight);
        let not_yet = Observed {
            restarts: 3,
            ready: true,
        };
        assert!(
            p.in_flight(&k, not_yet, 1000, 10_000, 2000),
            "not restarted yet"
        );
        let starting = Observed {
            restarts: 4,
            ready: false,
        };
        assert!(
            p.in_flight(&k, starting, 1000, 10_000, 2500),
            "not healthy yet"
        );
        let back = Observed {
            restarts: 4,
            ready: true,
        };
        assert!(
            !p.in_flight(&k, back, 1000, 10_000, 3000),
            "back and healthy"
        );
        assert!(!p.in_flight(&k, not_yet, 1000, 10_000, 3100), "forgotten");

        p.restarting(&k, flight);
        assert!(
            !p.in_flight(&k, starting, 1000, 10_000, 11_000),
            "the limit passed"
        );
        // Delivered by another replica: only the limit counts.
        let other = key("b");
        assert!(p.in_flight(&other, back, 5000, 10_000, 6000));
        assert!(!p.in_flight(&other, back, 5000, 10_000, 15_000));
    }

    #[test]
    fn batches_go_by_ordinal() {
        let waiting = vec![(2, "c"), (0, "a"), (1, "b")];
        assert_eq!(next_batch(&waiting, 1, 0), ["a"]);
        assert_eq!(next_batch(&waiting, 2, 1), ["a"]);
        assert!(next_batch(&waiting, 1, 1).is_empty());
        assert_eq!(next_batch(&waiting, 5, 0), ["a", "b", "c"]);
    }
}
