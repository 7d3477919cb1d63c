//! When the session sends the next batch of reports: a token bucket. A burst of a few
//! batches goes at once after a quiet spell (a start's `starting`/`running`, then its
//! health, a stop right after a start), and a node that keeps changing (a crash storm)
//! is held to one batch per [`Pace::window`] on average, each carrying everything that
//! changed meanwhile.

use std::time::Duration;

use tokio::time::Instant;

pub struct Pace {
    /// Batches that may go at once (up to `burst`); one more per `window`.
    tokens: f64,
    burst: f64,
    window: Duration,
    /// What the first change after a quiet spell waits for the ones right behind it.
    gather: Duration,
    refilled: Instant,
}

impl Pace {
    pub fn new(burst: u32, window: Duration, gather: Duration, now: Instant) -> Pace {
        Pace {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            window,
            gather,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.window.as_secs_f64()).min(self.burst);
        self.refilled = now;
    }

    /// When a batch noticed at `now` goes.
    pub fn due(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let wait = if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            self.window.mul_f64(1.0 - self.tokens)
        };
        now + wait.max(self.gather)
    }

    /// A batch went at `now`.
    pub fn spent(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_goes_at_once_then_one_per_window() {
        let t0 = Instant::now();
        let mut pace = Pace::new(3, 100 * MS, 2 * MS, t0);
        for _ in 0..3 {
            assert_eq!(pace.due(t0), t0 + 2 * MS);
            pace.spent(t0);
        }
        // The bucket is empty: the next waits a window, and a storm keeps to one per window.
        assert_eq!(pace.due(t0), t0 + 100 * MS);
        let mut now = t0;
        for _ in 0..10 {
            now = pace.due(now);
            pace.spent(now);
        }
        assert_eq!(now, t0 + 1000 * MS);
        // A quiet spell refills it, up to the burst.
        let later = now + 10_000 * MS;
        for _ in 0..3 {
            assert_eq!(pace.due(later), later + 2 * MS);
            pace.spent(later);
        }
        assert!(pace.due(later) > later + 50 * MS);
    }
}
