//! PBX usernames (PortSIP's `name`) derived from user principal names: letters, digits and
//! `_ - ' .` only, no leading or trailing dot, at most 64 characters, not one of PortSIP's
//! reserved names, unique in the tenant (case-insensitively) by a `-2`, `-3`, … suffix.
//! Lower-cased, because UPNs are case-insensitive and logins should be too.

use std::collections::HashSet;

/// PortSIP's longest username.
pub const MAX_USERNAME: usize = 64;
/// Reserved by PortSIP for system administrators (case ignored).
const RESERVED: [&str; 4] = ["admin", "system", "administrator", "root"];

/// The username a UPN asks for, before uniqueness. A guest's UPN
/// (`jane.doe_fabrikam.com#EXT#@contoso.onmicrosoft.com`) gives its home address part
/// (`jane.doe_fabrikam.com`): the inviting tenant's domain says nothing about the guest.
pub fn base_username(upn: &str) -> String {
    let lower = upn.trim().to_lowercase();
    let local = match lower.find("#ext#") {
        Some(at) => &lower[..at],
        None => lower.rsplit_once('@').map_or(lower.as_str(), |(l, _)| l),
    };
    let mapped: String = local
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-'.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = clip(mapped.trim_matches('.'), MAX_USERNAME);
    if trimmed.is_empty() {
        "user".to_string()
    } else {
        trimmed.to_string()
    }
}

/// At most `max` characters (ASCII by now), without a trailing dot.
fn clip(s: &str, max: usize) -> &str {
    s[..s.len().min(max)].trim_end_matches('.')
}

/// The usernames taken in a tenant; hands out unique ones.
#[derive(Debug, Default, Clone)]
pub struct Usernames {
    taken: HashSet<String>,
}

impl Usernames {
    pub fn new<'a>(taken: impl IntoIterator<Item = &'a str>) -> Self {
        Usernames {
            taken: taken.into_iter().map(str::to_lowercase).collect(),
        }
    }

    fn free(&self, name: &str) -> bool {
        !self.taken.contains(name) && !RESERVED.contains(&name)
    }

    /// A free username for `upn`, now taken.
    pub fn claim(&mut self, upn: &str) -> String {
        let base = base_username(upn);
        let name = if self.free(&base) {
            base
        } else {
            (2u64..)
                .map(|n| {
                    let suffix = format!("-{n}");
                    let stem = clip(&base, MAX_USERNAME - suffix.len());
                    format!("{stem}{suffix}")
                })
                .find(|candidate| self.free(candidate))
                .unwrap_or_default()
        };
        self.taken.insert(name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_USERNAME
            && !name.starts_with('.')
            && !name.ends_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-'.".contains(c))
    }

    #[test]
    fn derived_from_the_upn_local_part() {
        assert_eq!(base_username("Adele.Vance@contoso.com"), "adele.vance");
        assert_eq!(base_username("o'neil+pbx@x.com"), "o'neil_pbx");
        assert_eq!(base_username("..dots..@x.com"), "dots");
        assert_eq!(base_username("jörg müller@x.com"), "j_rg_m_ller");
        assert_eq!(
            base_username("jane.doe_fabrikam.com#EXT#@contoso.onmicrosoft.com"),
            "jane.doe_fabrikam.com"
        );
        assert_eq!(base_username("...@x.com"), "user");
        assert_eq!(base_username("no-at-sign"), "no-at-sign");
        let long = format!("{}.b@x.com", "a".repeat(63));
        assert_eq!(base_username(&long), "a".repeat(63));
    }

    #[test]
    fn unique_case_insensitively_and_never_reserved() {
        let mut names = Usernames::new(["Adele.Vance"]);
        assert_eq!(names.claim("adele.vance@x.com"), "adele.vance-2");
        assert_eq!(names.claim("ADELE.VANCE@y.com"), "adele.vance-3");
        assert_eq!(names.claim("admin@x.com"), "admin-2");
        let long = format!("{}.{}@x.com", "a".repeat(62), "b");
        let first = names.claim(&long);
        let second = names.claim(&long);
        assert_ne!(first, second);
        for name in [first, second] {
            assert!(valid(&name), "{name}");
        }
    }

    #[test]
    fn every_derived_name_is_valid() {
        for upn in [
            "a@b", ".@b", "x.y.z.@b", "émile@b", "a b c@b", "#EXT#@b", "..a..@b",
        ] {
            let mut names = Usernames::new([]);
            let name = names.claim(upn);
            assert!(valid(&name), "{upn} → {name}");
        }
    }
}
