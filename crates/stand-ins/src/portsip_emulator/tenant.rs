//! One tenant's data: its users and company contacts, stored as the JSON PortSIP was sent
//! (so every field the schema allows is kept without a struct field for each), in creation
//! order for paging, with indexes on what must be unique (username without case, extension
//! number, Microsoft 365 binding) so a 50,000-user benchmark does not scan the tenant for
//! every creation. Every change to an indexed field goes through [`TenantState::update`].
//! Passwords are kept (it is a stand-in) but no view carries them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use super::state::rfc3339;

/// Fields no answer ever shows.
pub(crate) const PASSWORD_FIELDS: [&str; 2] = ["password", "extension_password"];

/// One PBX user: what was sent, plus what PortSIP keeps beside it.
pub(crate) struct StoredUser {
    pub id: String,
    /// Creation order: lists page in it.
    pub seq: u64,
    /// The fields as sent (passwords included; never shown).
    pub fields: Map<String, Value>,
    /// The Microsoft 365 OID or UPN the user is bound to.
    pub ms365_binding: Option<String>,
    /// The username whose token created the user; `None` for users made by hand.
    pub created_by: Option<String>,
    /// Epoch milliseconds on the stand-in's clock.
    pub created_at: u64,
    /// The tenant administrator the stand-in was configured with.
    pub tenant_admin: bool,
}

impl StoredUser {
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).and_then(Value::as_str).unwrap_or("")
    }

    pub fn role(&self) -> &str {
        self.get("role")
    }

    pub fn enabled(&self) -> bool {
        self.fields.get("enabled").and_then(Value::as_bool) != Some(false)
    }

    /// As an answer shows it, cut to `fields` (an operation's answer schema).
    pub fn view(&self, fields: &BTreeSet<&str>) -> Value {
        let shown = |k: &str| fields.contains(k) && !PASSWORD_FIELDS.contains(&k);
        let mut out: Map<String, Value> = (self.fields.iter())
            .filter(|(k, _)| shown(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert("id".into(), Value::from(self.id.clone()));
        out.insert("enabled".into(), Value::Bool(self.enabled()));
        out.insert("created_at".into(), Value::from(rfc3339(self.created_at)));
        if self.ms365_binding.is_some() && fields.contains("sync_type") {
            out.insert("sync_type".into(), Value::from("Microsoft 365"));
        }
        Value::Object(out)
    }

    /// As the control API shows it: every stored field but the passwords, the binding
    /// (`""` when unbound) and who created the user.
    pub fn shown(&self) -> Value {
        let mut out = self.fields.clone();
        for key in PASSWORD_FIELDS {
            out.remove(key);
        }
        out.insert("id".into(), Value::from(self.id.clone()));
        out.insert("enabled".into(), Value::Bool(self.enabled()));
        out.insert("created_at".into(), Value::from(rfc3339(self.created_at)));
        let binding = self.ms365_binding.clone().unwrap_or_default();
        out.insert("ms365_binding".into(), Value::from(binding));
        out.insert("created_by".into(), self.created_by.clone().into());
        Value::Object(out)
    }

    /// The index keys: (lower-case username, extension number, lower-case binding).
    fn keys(&self) -> [Option<String>; 3] {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        [
            non_empty(&self.get("name").to_lowercase()),
            non_empty(self.get("extension_number")),
            (self.ms365_binding.as_deref()).and_then(|b| non_empty(&b.to_lowercase())),
        ]
    }
}

/// One company contact.
pub(crate) struct StoredContact {
    pub seq: u64,
    pub fields: Map<String, Value>,
}

impl StoredContact {
    pub fn view(&self, id: &str) -> Value {
        let mut out = self.fields.clone();
        out.insert("id".into(), Value::from(id));
        Value::Object(out)
    }
}

/// One tenant.
#[derive(Default)]
pub(crate) struct TenantState {
    users: HashMap<String, StoredUser>,
    user_order: BTreeMap<u64, String>,
    /// Username, extension number and binding → user id.
    indexes: [HashMap<String, String>; 3],
    contacts: HashMap<String, StoredContact>,
    contact_order: BTreeMap<u64, String>,
}

impl TenantState {
    pub fn user(&self, id: &str) -> Option<&StoredUser> {
        self.users.get(id)
    }

    /// The user signing in as `name` (usernames compare without case).
    pub fn user_named(&self, name: &str) -> Option<&StoredUser> {
        let id = self.indexes[0].get(&name.to_lowercase())?;
        self.users.get(id)
    }

    /// The user bound to `binding` (an OID or UPN, compared without case).
    pub fn bound_to(&self, binding: &str) -> Option<&StoredUser> {
        let id = self.indexes[2].get(&binding.to_lowercase())?;
        self.users.get(id)
    }

    pub fn add_user(&mut self, user: StoredUser) {
        for (index, key) in self.indexes.iter_mut().zip(user.keys()) {
            if let Some(key) = key {
                index.insert(key, user.id.clone());
            }
        }
        self.user_order.insert(user.seq, user.id.clone());
        self.users.insert(user.id.clone(), user);
    }

    pub fn remove_user(&mut self, id: &str) -> Option<StoredUser> {
        let user = self.users.remove(id)?;
        for (index, key) in self.indexes.iter_mut().zip(user.keys()) {
            if let Some(key) = key
                && index.get(&key).is_some_and(|owner| owner == id)
            {
                index.remove(&key);
            }
        }
        self.user_order.remove(&user.seq);
        Some(user)
    }

    /// Changes a user (indexes follow); `None` when there is no such user.
    pub fn update<R>(&mut self, id: &str, f: impl FnOnce(&mut StoredUser) -> R) -> Option<R> {
        let mut user = self.remove_user(id)?;
        let answer = f(&mut user);
        self.add_user(user);
        Some(answer)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Users in creation order, `skip` first, at most `top`.
    pub fn users_page(&self, skip: usize, top: usize) -> impl Iterator<Item = &StoredUser> {
        let ids = self.user_order.values().skip(skip).take(top);
        ids.filter_map(|id| self.users.get(id))
    }

    /// The first unique field another user (not `except`) already holds: (field, message).
    pub fn clash(
        &self,
        name: Option<&str>,
        number: Option<&str>,
        except: Option<&str>,
    ) -> Option<(&'static str, String)> {
        let other = |index: usize, key: String| {
            self.indexes[index]
                .get(&key)
                .filter(|owner| Some(owner.as_str()) != except)
                .and_then(|owner| self.users.get(owner))
        };
        if let Some(u) = name.and_then(|n| other(0, n.to_lowercase())) {
            return Some(("name", format!("the username {} is taken", u.get("name"))));
        }
        let u = number.and_then(|n| other(1, n.to_string()))?;
        let taken = u.get("extension_number");
        Some((
            "extension_number",
            format!("extension number {taken} is taken"),
        ))
    }

    pub fn contact(&self, id: &str) -> Option<&StoredContact> {
        self.contacts.get(id)
    }

    pub fn contact_mut(&mut self, id: &str) -> Option<&mut StoredContact> {
        self.contacts.get_mut(id)
    }

    pub fn add_contact(&mut self, id: String, contact: StoredContact) {
        self.contact_order.insert(contact.seq, id.clone());
        self.contacts.insert(id, contact);
    }

    pub fn remove_contact(&mut self, id: &str) -> bool {
        let Some(contact) = self.contacts.remove(id) else {
            return false;
        };
        self.contact_order.remove(&contact.seq);
        true
    }

    pub fn contact_count(&self) -> usize {
        self.contacts.len()
    }

    /// Contacts in creation order as answers show them, `skip` first, at most `top`.
    pub fn contacts_page(&self, skip: usize, top: usize) -> Vec<Value> {
        let ids = self.contact_order.values().skip(skip).take(top);
        ids.filter_map(|id| Some(self.contacts.get(id)?.view(id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(id: &str, seq: u64, name: &str, number: &str) -> StoredUser {
        StoredUser {
            id: id.into(),
            seq,
            fields: json!({"name": name, "extension_number": number})
                .as_object()
                .unwrap()
                .clone(),
            ms365_binding: None,
            created_by: None,
            created_at: 0,
            tenant_admin: false,
        }
    }

    #[test]
    fn indexes_follow_every_change_and_pages_keep_creation_order() {
        let mut t = TenantState::default();
        t.add_user(user("b", 2, "Bob", "102"));
        t.add_user(user("a", 1, "ann", "101"));
        assert_eq!(t.clash(Some("BOB"), None, None).map(|c| c.0), Some("name"));
        assert_eq!(
            t.clash(None, Some("101"), None).map(|c| c.0),
            Some("extension_number")
        );
        assert_eq!(
            t.clash(Some("bob"), Some("102"), Some("b")),
            None,
            "a user never clashes with itself"
        );
        t.update("b", |u| {
            u.fields.insert("extension_number".into(), json!("200"));
            u.ms365_binding = Some("OID-1".into());
        });
        assert_eq!(
            t.clash(None, Some("102"), None),
            None,
            "the old number is free"
        );
        assert!(t.clash(None, Some("200"), None).is_some());
        assert_eq!(t.bound_to("oid-1").map(|u| u.id.as_str()), Some("b"));
        let order: Vec<&str> = t.users_page(0, 10).map(|u| u.id.as_str()).collect();
        assert_eq!(order, ["a", "b"]);
        assert!(t.remove_user("a").is_some());
        assert!(t.user_named("ANN").is_none() && t.clash(None, Some("101"), None).is_none());
        assert_eq!((t.user_count(), t.users_page(1, 10).count()), (1, 0));
    }
}
