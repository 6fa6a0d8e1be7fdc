//! A token bucket per connection: the numbers behind "too many messages".
//!
//! Owns the arithmetic only; the hub decides what a refusal means.

use std::time::Instant;

/// A token bucket that starts full and refills continuously.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub(crate) fn full(capacity: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(capacity),
            updated: now,
        }
    }

    /// Takes one token if there is one; refills first with the time elapsed.
    pub(crate) fn try_take(&mut self, capacity: u32, per_second: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * f64::from(per_second)).min(f64::from(capacity));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How many whole tokens are left.
    pub(crate) fn level(&self) -> f64 {
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_at_the_configured_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(3, start);
        assert!(bucket.try_take(3, 2, start));
        assert!(bucket.try_take(3, 2, start));
        assert!(bucket.try_take(3, 2, start));
        assert!(!bucket.try_take(3, 2, start));
        // Half a second at 2 per second gives one token back.
        let later = start + Duration::from_millis(500);
        assert!(bucket.try_take(3, 2, later));
        assert!(!bucket.try_take(3, 2, later));
        // Never more than the capacity.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.try_take(3, 2, much_later));
        }
        assert!(!bucket.try_take(3, 2, much_later));
    }
}
