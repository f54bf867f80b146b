//! Which Microsoft 365 users become PBX users: `users.sync_type` with `selected_users` (OID
//! or UPN, case-insensitive; INCLUDE = only those, EXCLUDE = all but those, see
//! [`crate::settings::SyncType`]), guests only with `sync_guest_users`, and the optional
//! group (transitive members) and department filters. Accounts with only a display name
//! (rooms, service accounts) are in scope like everyone else: exclusions are the
//! administrator's scope settings, never an accident of the data.
//!
//! The scope's fingerprint is saved with the deltaLink: a delta round only reports users
//! that changed in Microsoft 365, so after a scope change the next run must be a full one
//! or newly included users would never arrive.

use std::collections::HashSet;

use crate::graph::User;
use crate::ids::ObjectId;
use crate::settings::{Scope, SyncType, UserSync};

/// What to do with one (not removed) Graph user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// In scope: becomes (or stays) a PBX user.
    Sync,
    /// Out of scope: a PBX user it had is disabled.
    OutOfScope,
}

/// The scope of one run.
#[derive(Debug, Clone)]
pub struct UserScope {
    selection: Scope,
    guests: bool,
    departments: Vec<String>,
    /// The group's transitive members, when a group is set.
    group: Option<HashSet<ObjectId>>,
}

impl UserScope {
    pub fn new(users: &UserSync, departments: &[String], group: Option<HashSet<ObjectId>>) -> Self {
        UserScope {
            selection: Scope {
                enabled: true,
                selected_users: users.selected_users.clone(),
                sync_type: users.sync_type,
            },
            guests: users.sync_guest_users,
            departments: departments
                .iter()
                .map(|d| d.trim().to_lowercase())
                .collect(),
            group,
        }
    }

    pub fn judge(&self, u: &User) -> Verdict {
        let upn = u.user_principal_name.as_deref().unwrap_or("");
        let guest = u
            .user_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("guest"));
        let department_ok = self.departments.is_empty()
            || u.department
                .as_deref()
                .is_some_and(|d| self.departments.contains(&d.trim().to_lowercase()));
        let group_ok = self.group.as_ref().is_none_or(|g| g.contains(&u.id));
        if (guest && !self.guests)
            || !self.selection.covers(u.id.as_str(), upn)
            || !department_ok
            || !group_ok
        {
            return Verdict::OutOfScope;
        }
        Verdict::Sync
    }
}

/// A digest of everything that decides scope, in a canonical form (order and case of
/// the lists do not matter).
pub fn fingerprint(users: &UserSync, departments: &[String], group_id: Option<&str>) -> String {
    let canon = |items: &[String]| {
        let mut v: Vec<String> = items.iter().map(|s| s.trim().to_lowercase()).collect();
        v.sort();
        v.dedup();
        v
    };
    let sync_type = match users.sync_type {
        SyncType::All => "ALL",
        SyncType::Include => "INCLUDE",
        SyncType::Exclude => "EXCLUDE",
    };
    let doc = serde_json::json!({
        "v": 1,
        "type": sync_type,
        // With ALL the list is ignored, so editing it must not force a full run.
        "selected": if users.sync_type == SyncType::All { Vec::new() } else { canon(&users.selected_users) },
        "guests": users.sync_guest_users,
        "departments": canon(departments),
        "group": group_id.map(|g| g.trim().to_lowercase()),
    });
    crate::encoding::sha256_hex(doc.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, upn: &str, given: Option<&str>, kind: &str, dept: Option<&str>) -> User {
        User {
            id: id.into(),
            user_principal_name: Some(upn.into()),
            given_name: given.map(Into::into),
            user_type: Some(kind.into()),
            department: dept.map(Into::into),
            ..User::default()
        }
    }

    #[test]
    fn guests_departments_groups_and_names() {
        let settings = UserSync {
            enabled: true,
            ..UserSync::default()
        };
        let scope = UserScope::new(&settings, &["Sales ".into()], None);
        let member = user("a", "a@x", Some("A"), "Member", Some("sales"));
        assert_eq!(scope.judge(&member), Verdict::Sync);
        let guest = user("g", "g#EXT#@x", Some("G"), "Guest", Some("Sales"));
        assert_eq!(scope.judge(&guest), Verdict::OutOfScope);
        let other = user("b", "b@x", Some("B"), "Member", Some("Legal"));
        assert_eq!(scope.judge(&other), Verdict::OutOfScope);
        let room = user("r", "r@x", None, "Member", Some("Sales"));
        assert_eq!(
            scope.judge(&room),
            Verdict::Sync,
            "display-name-only accounts sync"
        );
        let group: HashSet<ObjectId> = [ObjectId::new("b")].into();
        let scope = UserScope::new(&settings, &[], Some(group));
        assert_eq!(scope.judge(&member), Verdict::OutOfScope);
        assert_eq!(scope.judge(&other), Verdict::Sync);
    }

    #[test]
    fn fingerprint_ignores_order_and_case_but_not_content() {
        let mut s = UserSync {
            sync_type: SyncType::Include,
            selected_users: vec!["A@x".into(), "b@x".into()],
            ..UserSync::default()
        };
        let f1 = fingerprint(&s, &[], None);
        s.selected_users = vec!["B@X".into(), "a@x".into()];
        assert_eq!(fingerprint(&s, &[], None), f1);
        s.selected_users.push("c@x".into());
        assert_ne!(fingerprint(&s, &[], None), f1);
        assert_ne!(fingerprint(&s, &[], Some("g")), fingerprint(&s, &[], None));
        s.sync_type = SyncType::All;
        let all = fingerprint(&s, &[], None);
        s.selected_users.clear();
        assert_eq!(fingerprint(&s, &[], None), all);
    }
}
