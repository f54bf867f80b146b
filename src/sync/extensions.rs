//! Extension numbers for synced users. A range comes from `starting_extension_number`
//! (3–13 digits, no leading zero; numbers of the same length upward from it) or else from
//! the configured default range. Numbers held by any PBX user, and numbers remembered for
//! other Microsoft 365 users (whose PBX user was deleted on the PBX side and will come back
//! with its number) are never handed out. The caller allocates to new users sorted by oid,
//! and always takes the first free number, so the result does not depend on the order
//! Graph returned the users in, nor on whether an earlier run was interrupted.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use super::SyncError;

/// Failure reason of a user when the range is full.
pub const RANGE_EXHAUSTED: &str = "no free extension in range";

/// The numbers new users get, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionRange {
    pub first: u64,
    pub last: u64,
}

impl ExtensionRange {
    /// From the setting (validated as PortSIP does), else `default`.
    pub fn from_settings(
        starting: &str,
        default: &RangeInclusive<u64>,
    ) -> Result<ExtensionRange, SyncError> {
        let starting = starting.trim();
        if starting.is_empty() {
            if default.is_empty() || *default.start() == 0 {
                return Err(SyncError::InvalidOptions(format!(
                    "the default extension range {default:?} is empty or starts at 0"
                )));
            }
            return Ok(ExtensionRange {
                first: *default.start(),
                last: *default.end(),
            });
        }
        let ok = (3..=13).contains(&starting.len())
            && starting.bytes().all(|b| b.is_ascii_digit())
            && !starting.starts_with('0');
        let first: u64 = starting.parse().ok().filter(|_| ok).ok_or_else(|| {
            SyncError::InvalidOptions(format!(
                "starting_extension_number {starting:?} is not 3 to 13 digits without a leading zero"
            ))
        })?;
        // Upward within the same number of digits: 1000 → 1000..=9999.
        let last = 10u64.pow(starting.len() as u32) - 1;
        Ok(ExtensionRange { first, last })
    }
}

/// Hands out numbers: the first free one from the start of the range, each once.
#[derive(Debug, Clone)]
pub struct Allocator {
    range: ExtensionRange,
    /// Numbers held by PBX users.
    held: HashSet<String>,
    /// Numbers remembered per Microsoft user (oid → number).
    remembered: HashMap<String, String>,
    /// Who a remembered number belongs to.
    owner: HashMap<String, String>,
    next: u64,
}

impl Allocator {
    /// `held`: every PBX user's number; `remembered`: (oid, number) of synced users.
    pub fn new<'a>(
        range: ExtensionRange,
        held: impl IntoIterator<Item = &'a str>,
        remembered: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Allocator {
        let mut a = Allocator {
            range,
            held: held.into_iter().map(str::to_string).collect(),
            remembered: HashMap::new(),
            owner: HashMap::new(),
            next: range.first,
        };
        for (oid, number) in remembered {
            a.remembered.insert(oid.to_string(), number.to_string());
            a.owner.insert(number.to_string(), oid.to_string());
        }
        a
    }

    /// A number for the user `oid`: its remembered one when no PBX user holds it now,
    /// else the first free number of the range; `None` when the range is full.
    pub fn assign(&mut self, oid: &str) -> Option<String> {
        if let Some(own) = self.remembered.get(oid).cloned()
            && !self.held.contains(&own)
        {
            self.held.insert(own.clone());
            return Some(own);
        }
        let number = self.first_free()?;
        self.remembered.insert(oid.to_string(), number.clone());
        self.owner.insert(number.clone(), oid.to_string());
        self.held.insert(number.clone());
        Some(number)
    }

    fn first_free(&mut self) -> Option<String> {
        // `next` only moves forward: every number below it is taken for this run, so a
        // whole run costs O(users + taken numbers), not O(users × range).
        while self.next <= self.range.last {
            let candidate = self.next.to_string();
            self.next += 1;
            if !self.held.contains(&candidate) && !self.owner.contains_key(&candidate) {
                return Some(candidate);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u64, last: u64) -> ExtensionRange {
        ExtensionRange { first, last }
    }

    #[test]
    fn ranges_from_settings() {
        let d = 1000..=9999;
        assert_eq!(
            ExtensionRange::from_settings("", &d).unwrap(),
            range(1000, 9999)
        );
        assert_eq!(
            ExtensionRange::from_settings("250", &d).unwrap(),
            range(250, 999)
        );
        assert_eq!(
            ExtensionRange::from_settings("1000000000000", &d)
                .unwrap()
                .last,
            9_999_999_999_999
        );
        for bad in ["0100", "12", "12a4", "12345678901234"] {
            assert!(ExtensionRange::from_settings(bad, &d).is_err(), "{bad}");
        }
        assert!(ExtensionRange::from_settings("", &(0..=9)).is_err());
    }

    #[test]
    fn skips_held_and_remembered_numbers_and_reuses_own() {
        let mut a = Allocator::new(
            range(100, 105),
            ["100", "102"],
            [("old", "101"), ("gone", "103")],
        );
        assert_eq!(a.assign("old").as_deref(), Some("101"));
        assert_eq!(a.assign("n1").as_deref(), Some("104"));
        assert_eq!(a.assign("n2").as_deref(), Some("105"));
        assert_eq!(a.assign("n3"), None, "{RANGE_EXHAUSTED}");
        // The remembered number of a user whose PBX user is gone was never handed out.
        assert_eq!(a.assign("gone").as_deref(), Some("103"));
    }

    #[test]
    fn own_number_taken_by_a_local_user_means_a_new_one() {
        let mut a = Allocator::new(range(100, 199), ["100"], [("u", "100")]);
        assert_eq!(a.assign("u").as_deref(), Some("101"));
    }

    #[test]
    fn allocation_in_oid_order_does_not_depend_on_input_order() {
        let oids: Vec<String> = (0..50)
            .map(|i| format!("{:08x}", i * 7919 % 1000))
            .collect();
        let run = |mut order: Vec<String>| {
            order.sort();
            let mut a = Allocator::new(range(1000, 9999), ["1003", "1010"], []);
            order
                .into_iter()
                .map(|o| (a.assign(&o).unwrap(), o))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let forward = run(oids.clone());
        let mut shuffled = oids.clone();
        fastrand::Rng::with_seed(3).shuffle(&mut shuffled);
        assert_eq!(run(shuffled), forward);
        assert!(!forward.contains_key("1003") && !forward.contains_key("1010"));
    }
}
