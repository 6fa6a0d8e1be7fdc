//! A budget for unauthenticated answers larger than their request.
//!
//! Over UDP a source address can be forged, so every answer to an
//! unauthenticated request is a potential reflection towards a victim. The
//! rule: an answer no larger than its request is always sent; a larger one
//! (a 401 challenge to a browser's 28-byte Allocate, at most
//! [`MAX_OVERSIZE_ANSWER`] bytes) only within a small per-address budget, so a
//! forged flood can make this server send a victim at most a few hundred
//! bytes per second. Owns the accounting only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Largest unauthenticated answer ever sent for a smaller request.
pub const MAX_OVERSIZE_ANSWER: usize = 64;
/// Oversize answers per second per address, sustained.
const RATE: f64 = 5.0;
/// Oversize answers per address in a burst.
const BURST: f64 = 10.0;
/// Addresses tracked at once; past this, oversize answers are refused (fail closed).
const MAX_ADDRESSES: usize = 50_000;

#[derive(Debug, Default)]
pub struct ReflectionBudget {
    addresses: HashMap<IpAddr, (f64, Instant)>,
}

impl ReflectionBudget {
    /// May an answer of `answer_len` bytes go to `address` for a request of `request_len`?
    pub fn allow(
        &mut self,
        address: IpAddr,
        request_len: usize,
        answer_len: usize,
        now: Instant,
    ) -> bool {
        if answer_len <= request_len {
            return true;
        }
        if answer_len > MAX_OVERSIZE_ANSWER {
            return false;
        }
        if !self.addresses.contains_key(&address) && self.addresses.len() >= MAX_ADDRESSES {
            // Forget addresses whose budget has refilled; they cost nothing to re-learn.
            self.addresses
                .retain(|_, (tokens, updated)| refill(*tokens, *updated, now) < BURST);
            if self.addresses.len() >= MAX_ADDRESSES {
                return false;
            }
        }
        let (tokens, updated) = self.addresses.entry(address).or_insert((BURST, now));
        let available = refill(*tokens, *updated, now);
        *updated = now;
        if available >= 1.0 {
            *tokens = available - 1.0;
            true
        } else {
            *tokens = available;
            false
        }
    }
}

fn refill(tokens: f64, updated: Instant, now: Instant) -> f64 {
    (tokens + now.saturating_duration_since(updated).as_secs_f64() * RATE).min(BURST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn small_answers_always_pass_large_ones_are_budgeted() {
        let mut budget = ReflectionBudget::default();
        let victim: IpAddr = "192.0.2.9".parse().unwrap();
        let now = Instant::now();
        assert!((0..1000).all(|_| budget.allow(victim, 60, 52, now)));
        let sent = (0..100)
            .filter(|_| budget.allow(victim, 28, 52, now))
            .count();
        assert_eq!(sent, 10);
        assert!(!budget.allow(victim, 28, 65, now + Duration::from_secs(10)));
        let later = now + Duration::from_secs(1);
        let sent = (0..100)
            .filter(|_| budget.allow(victim, 28, 52, later))
            .count();
        assert_eq!(sent, 5);
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(budget.allow(other, 28, 52, later));
    }
}
