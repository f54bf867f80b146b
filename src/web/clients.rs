//! Per-client state for limits (the sign-in rate limit, the admin API's failed attempts):
//! who a client is (an IPv4 address, or an IPv6 /64, which one subscriber usually holds
//! whole) and a map that forgets idle clients without ever scanning under its lock. The map
//! keeps two generations: a lookup moves a client from the older one into the current one,
//! and when a generation has lasted its `lifetime` (or the current one is full) the older
//! one is dropped whole. A client not seen for a whole generation is therefore forgotten,
//! which callers choose `lifetime` to make harmless (its state would have reset anyway).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The key a client address is tracked under.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Client state in two generations, at most `capacity` clients in all.
pub struct ClientMap<V> {
    current: HashMap<IpAddr, V>,
    previous: HashMap<IpAddr, V>,
    turned_at: Instant,
    lifetime: Duration,
    capacity: usize,
}

impl<V> ClientMap<V> {
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        ClientMap {
            current: HashMap::new(),
            previous: HashMap::new(),
            turned_at: Instant::now(),
            lifetime,
            capacity: capacity.max(2),
        }
    }

    /// The state of `ip`'s client at `now`, made by `fresh` when it has none; moved into
    /// the current generation.
    pub fn entry(&mut self, ip: IpAddr, now: Instant, fresh: impl FnOnce() -> V) -> &mut V {
        if now.saturating_duration_since(self.turned_at) >= self.lifetime
            || self.current.len() >= self.capacity / 2
        {
            self.previous = std::mem::take(&mut self.current);
            self.turned_at = now;
        }
        let key = client_key(ip);
        if !self.current.contains_key(&key) {
            let value = self.previous.remove(&key).unwrap_or_else(fresh);
            self.current.insert(key, value);
        }
        self.current.get_mut(&key).expect("just inserted")
    }

    /// The state of `ip`'s client, if it is tracked (no generation turns).
    pub fn get(&self, ip: IpAddr) -> Option<&V> {
        let key = client_key(ip);
        self.current.get(&key).or_else(|| self.previous.get(&key))
    }

    /// Clients tracked now (what the tests bound).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_subscribers_are_one_client_per_64_and_idle_clients_are_forgotten() {
        assert_eq!(
            client_key("2001:db8:1:2:ffff::9".parse().unwrap()),
            client_key("2001:db8:1:2::1".parse().unwrap())
        );
        assert_eq!(
            client_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        let t0 = Instant::now();
        let mut map: ClientMap<u32> = ClientMap::new(Duration::from_secs(60), 10);
        *map.entry("192.0.2.1".parse().unwrap(), t0, || 0) += 1;
        assert_eq!(map.get("192.0.2.1".parse().unwrap()), Some(&1));
        for i in 0..100u32 {
            map.entry(
                IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                t0,
                || 0,
            );
            assert!(map.len() <= 10, "bounded: {}", map.len());
        }
        let later = t0 + Duration::from_secs(121);
        map.entry("192.0.2.9".parse().unwrap(), later, || 0);
        map.entry(
            "192.0.2.9".parse().unwrap(),
            later + Duration::from_secs(61),
            || 0,
        );
        assert_eq!(
            map.len(),
            1,
            "two idle generations later only the active client is left"
        );
    }
}
