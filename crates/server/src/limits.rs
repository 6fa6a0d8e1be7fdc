//! Caps on WebSocket connections: in all, and per client address.
//!
//! Owns the counting only. A [`Permit`] is held for the life of a connection
//! and gives its slot back when dropped, so no path can leak a slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    TooManyFromAddress,
}

#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ConnectionLimits>,
    key: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a slot for a connection from `address`, or says why not.
    pub fn try_acquire(self: &Arc<Self>, address: IpAddr) -> Result<Permit, Refusal> {
        let key = address_key(address);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if counts.total >= self.max_total {
            return Err(Refusal::ServerFull);
        }
        let for_address = counts.per_address.entry(key).or_insert(0);
        if *for_address >= self.max_per_address {
            return Err(Refusal::TooManyFromAddress);
        }
        *for_address += 1;
        counts.total += 1;
        Ok(Permit {
            limits: Arc::clone(self),
            key,
        })
    }

    pub fn total(&self) -> usize {
        self.counts
            .lock()
            .map(|counts| counts.total)
            .unwrap_or_default()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self
            .limits
            .counts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_address.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.per_address.remove(&self.key);
            }
        }
    }
}

/// IPv4 (also when mapped into IPv6) counts per address; IPv6 per /64, the
/// block one subscriber usually holds.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                for segment in segments.iter_mut().skip(4) {
                    *segment = 0;
                }
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn per_address_and_total_caps_hold_and_free_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let a1 = limits.try_acquire(ip("10.0.0.1"));
        let a2 = limits.try_acquire(ip("::ffff:10.0.0.1"));
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(
            limits.try_acquire(ip("10.0.0.1")).err(),
            Some(Refusal::TooManyFromAddress)
        );
        let b1 = limits.try_acquire(ip("10.0.0.2"));
        assert!(b1.is_ok());
        assert_eq!(
            limits.try_acquire(ip("10.0.0.3")).err(),
            Some(Refusal::ServerFull)
        );
        drop(a1);
        assert_eq!(limits.total(), 2);
        assert!(limits.try_acquire(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let limits = ConnectionLimits::new(10, 1);
        let first = limits.try_acquire(ip("2001:db8:1:2::1"));
        assert!(first.is_ok());
        assert_eq!(
            limits.try_acquire(ip("2001:db8:1:2::ffff")).err(),
            Some(Refusal::TooManyFromAddress)
        );
        assert!(limits.try_acquire(ip("2001:db8:1:3::1")).is_ok());
    }
}
