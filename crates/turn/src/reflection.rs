//! A budget for unauthenticated answers larger than their request.
//!
//! Over UDP a source address can be forged, so every answer to an
//! unauthenticated request is a potential reflection towards a victim. The
//! rule: an answer no larger than its request is always sent; a larger one
//! (a 401 challenge to a browser's 28-byte Allocate, at most
//! [`MAX_OVERSIZE_ANSWER`] bytes, so at most 2.3 times the request) only
//! within a per-address budget and a global one. A forged flood can then make
//! this server send one victim at most 3.2 KB/s, and all victims together at
//! most 64 KB/s, while a NAT with many real clients behind one address is
//! still served. Owns the accounting only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Largest unauthenticated answer ever sent for a smaller request.
pub const MAX_OVERSIZE_ANSWER: usize = 64;
/// Oversize answers per second per address, sustained.
const RATE: f64 = 50.0;
/// Oversize answers per address in a burst.
const BURST: f64 = 100.0;
/// Oversize answers per second for all addresses together, sustained and in a burst.
const GLOBAL_RATE: f64 = 1000.0;
const GLOBAL_BURST: f64 = 2000.0;
/// Addresses tracked at once; past this, oversize answers are refused (fail closed).
const MAX_ADDRESSES: usize = 50_000;

#[derive(Debug, Default)]
pub struct ReflectionBudget {
    addresses: HashMap<IpAddr, (f64, Instant)>,
    /// The global bucket; `None` until first used.
    global: Option<(f64, Instant)>,
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
        let (global_tokens, global_updated) = self.global.get_or_insert((GLOBAL_BURST, now));
        let global = refill_at(
            *global_tokens,
            *global_updated,
            now,
            GLOBAL_RATE,
            GLOBAL_BURST,
        );
        *global_updated = now;
        *global_tokens = global;
        let (tokens, updated) = self.addresses.entry(address).or_insert((BURST, now));
        let available = refill(*tokens, *updated, now);
        *updated = now;
        if available >= 1.0 && global >= 1.0 {
            *tokens = available - 1.0;
            if let Some((global_tokens, _)) = &mut self.global {
                *global_tokens -= 1.0;
            }
            true
        } else {
            *tokens = available;
            false
        }
    }
}

fn refill(tokens: f64, updated: Instant, now: Instant) -> f64 {
    refill_at(tokens, updated, now, RATE, BURST)
}

fn refill_at(tokens: f64, updated: Instant, now: Instant, rate: f64, burst: f64) -> f64 {
    (tokens + now.saturating_duration_since(updated).as_secs_f64() * rate).min(burst)
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
        let sent = (0..1000)
            .filter(|_| budget.allow(victim, 28, 52, now))
            .count();
        assert_eq!(sent, 100);
        assert!(!budget.allow(victim, 28, 65, now + Duration::from_secs(10)));
        let later = now + Duration::from_secs(1);
        let sent = (0..1000)
            .filter(|_| budget.allow(victim, 28, 52, later))
            .count();
        assert_eq!(sent, 50);
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(budget.allow(other, 28, 52, later));
    }

    #[test]
    fn all_addresses_together_share_a_global_budget() {
        let mut budget = ReflectionBudget::default();
        let now = Instant::now();
        let sent = (0..5000u32)
            .filter(|n| {
                let address = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
                budget.allow(address, 28, 52, now)
            })
            .count();
        assert_eq!(sent, 2000);
    }
}
