//! A per-client token bucket for the sign-in endpoints, so a script cannot hammer Microsoft
//! through the gateway or fill the flow-state memory. Clients are IPv4 addresses or IPv6
//! /64s; idle ones are forgotten by turning generations, never by a scan under the lock.
//! Answers carry `Retry-After`.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::web::clients::ClientMap;
pub use crate::web::clients::client_key;

/// Buckets kept at most (both generations together).
const MAX_TRACKED: usize = 100_000;

pub struct RateLimiter {
    per_minute: f64,
    burst: f64,
    /// (tokens, when counted) per client. A generation lasts as long as an empty bucket
    /// takes to refill, so a client forgotten by the map had a full bucket anyway.
    buckets: Mutex<ClientMap<(f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` sustained, with bursts of the same size.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        let refill = Duration::from_secs(60);
        RateLimiter {
            per_minute,
            burst: per_minute,
            buckets: Mutex::new(ClientMap::new(refill, MAX_TRACKED)),
        }
    }

    /// `Ok` when `ip` may proceed, else how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let rate = self.per_minute / 60.0;
        let burst = self.burst;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = buckets.entry(ip, now, || (burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate).max(Duration::from_secs(1)))
        }
    }

    /// Clients tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_per_ip() {
        let limiter = RateLimiter::new(5);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..5 {
            assert!(limiter.check(a).is_ok());
        }
        let wait = limiter.check(a).unwrap_err();
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(13),
            "{wait:?}"
        );
        assert!(limiter.check(b).is_ok(), "other clients are not affected");
    }

    #[test]
    fn an_ipv6_subscriber_is_one_client_per_64() {
        let limiter = RateLimiter::new(2);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check(one).is_ok());
        assert!(limiter.check(same_64).is_ok());
        assert!(limiter.check(one).is_err(), "the /64 shares one bucket");
        assert!(limiter.check(other_64).is_ok());
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn idle_clients_are_forgotten_without_a_scan_and_memory_stays_bounded() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        let drained: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..60 {
            assert!(limiter.check_at(drained, t0).is_ok());
        }
        assert!(limiter.check_at(drained, t0).is_err());
        // A flood of distinct addresses: the map never grows past the bound.
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.check_at(ip, t0);
        }
        assert!(limiter.tracked() <= MAX_TRACKED, "{}", limiter.tracked());
        // Two generations later a client is forgotten, i.e. its bucket is full again.
        let later = t0 + Duration::from_secs(121);
        let _ = limiter.check_at("192.0.2.9".parse().unwrap(), later);
        let _ = limiter.check_at(
            "192.0.2.9".parse().unwrap(),
            later + Duration::from_secs(61),
        );
        assert!(limiter.tracked() <= 2, "{}", limiter.tracked());
    }
}
