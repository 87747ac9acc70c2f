//! Failed authentication, limited per client address with bounded memory.
//!
//! Each failed authentication (401) costs the client's address one unit of a smoothed token
//! bucket (GCRA): `count` failures in a burst, then one per `window / count`. A client over its
//! limit is answered `429` before its key is hashed or looked up, whatever key it sends.
//! IPv6 clients are counted per /64 (one host usually owns a whole /64).
//!
//! Hand-rolled rather than `governor`'s keyed limiter: that one grows with every new key until it
//! is explicitly shrunk, while this table holds at most `capacity` addresses and, when full,
//! forgets first the addresses that are back under their limit, then the least limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client addresses tracked at once.
pub const DEFAULT_CAPACITY: usize = 8192;

/// The failed-authentication limiter.
pub struct AuthLimiter {
    /// Time one failure costs; `None`: unlimited.
    interval: Option<Duration>,
    /// How far ahead of now a client's theoretical arrival time may be (burst allowance).
    tolerance: Duration,
    capacity: usize,
    /// Client → theoretical arrival time of its next allowed failure.
    clients: Mutex<HashMap<IpAddr, Instant>>,
}

impl AuthLimiter {
    /// `count` failures per `window` per client address (0: unlimited), at most `capacity`
    /// addresses tracked.
    pub fn new(count: u32, window: Duration, capacity: usize) -> AuthLimiter {
        let interval = (count > 0 && !window.is_zero()).then(|| window / count);
        AuthLimiter {
            interval,
            tolerance: interval.map_or(Duration::ZERO, |i| window.saturating_sub(i)),
            capacity: capacity.max(1),
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        // Single inserts and removals cannot leave the map inconsistent: a poisoned lock is fine.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(wait)` when `client` is over its limit: how long until its next attempt counts.
    pub fn check(&self, client: IpAddr) -> Option<Duration> {
        self.interval?;
        let now = Instant::now();
        let tat = *self.lock().get(&key(client))?;
        let ahead = tat.checked_duration_since(now)?;
        (ahead > self.tolerance).then(|| ahead - self.tolerance)
    }

    /// Counts one failed authentication of `client`.
    pub fn failed(&self, client: IpAddr) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        let mut clients = self.lock();
        let k = key(client);
        if !clients.contains_key(&k) && clients.len() >= self.capacity {
            clients.retain(|_, tat| *tat > now);
            if clients.len() >= self.capacity {
                if let Some(least) = clients.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    clients.remove(&least);
                }
            }
        }
        let tat = clients.entry(k).or_insert(now);
        *tat = (*tat).max(now) + interval;
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// IPv4 addresses as they are; IPv6 by their /64 (IPv4-mapped ones as IPv4).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_count_is_allowed_then_limited() {
        let l = AuthLimiter::new(3, Duration::from_secs(60), 100);
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            assert_eq!(l.check(a), None);
            l.failed(a);
        }
        let wait = l.check(a).unwrap();
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20));
        assert_eq!(l.check(ip("10.0.0.2")), None);
    }

    #[test]
    fn zero_is_unlimited_and_tracks_nothing() {
        let l = AuthLimiter::new(0, Duration::from_secs(60), 100);
        for _ in 0..100 {
            l.failed(ip("10.0.0.1"));
        }
        assert_eq!(l.check(ip("10.0.0.1")), None);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn memory_is_bounded_and_the_most_limited_are_kept() {
        let l = AuthLimiter::new(2, Duration::from_secs(60), 4);
        let bad = ip("192.0.2.1");
        l.failed(bad);
        l.failed(bad);
        assert!(l.check(bad).is_some());
        for i in 0..1000u32 {
            l.failed(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert_eq!(l.tracked(), 4);
        assert!(l.check(bad).is_some());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let l = AuthLimiter::new(1, Duration::from_secs(60), 100);
        l.failed(ip("2001:db8:1:2::1"));
        assert!(l.check(ip("2001:db8:1:2::ffff")).is_some());
        assert_eq!(l.check(ip("2001:db8:1:3::1")), None);
        l.failed(ip("::ffff:10.1.1.1"));
        assert!(l.check(ip("10.1.1.1")).is_some());
    }
}
