//! The two identifiers every layer passes along: a PBX tenant's id and a Microsoft Entra
//! object id. Both are strings on the wire and in the database, and a function taking two
//! `&str`s (`pbx_user(tenant, id)`, `directory_user(tenant, oid)`) cannot tell them apart;
//! as types they cannot be swapped. A [`TenantId`] is checked once, where it enters (the
//! configuration file, the admin API, the command line, a sealed cookie); an [`ObjectId`] is
//! Microsoft's to choose, so it is not checked, only normalised: object ids are GUIDs, which
//! compare without regard to case. How the store binds and reads them is the store's
//! business (`store::id_columns`), not theirs.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A PBX tenant's id: 1–64 ASCII letters, digits, `-` or `_` (it appears in URLs, secret
/// names and log lines unescaped).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// Why a string is not a [`TenantId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a tenant id: {rule}", rule = TenantId::RULE)]
pub struct InvalidTenantId(pub String);

impl TenantId {
    /// The rule for what a tenant id may contain, as a hint for error messages.
    pub const RULE: &'static str = "use 1-64 letters, digits, '-' or '_'";

    /// Checks `id` against the rule above.
    pub fn parse(id: &str) -> Result<Self, InvalidTenantId> {
        Self::try_from(id.to_owned())
    }

    /// A tenant id written into the program (a demo's, a test's); panics if it breaks the
    /// rule, as `http::HeaderValue::from_static` does.
    pub fn from_static(id: &'static str) -> Self {
        match Self::parse(id) {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        }
    }

    /// A tenant id read back from where only checked ids are written (the store).
    pub(crate) fn from_trusted(id: String) -> Self {
        TenantId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_valid(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidTenantId;

    fn try_from(id: String) -> Result<Self, InvalidTenantId> {
        if Self::is_valid(&id) {
            Ok(TenantId(id))
        } else {
            Err(InvalidTenantId(id))
        }
    }
}

impl std::str::FromStr for TenantId {
    type Err = InvalidTenantId;

    fn from_str(id: &str) -> Result<Self, InvalidTenantId> {
        Self::parse(id)
    }
}

/// A Microsoft Entra object id: the `id` of a Graph user or group, the `oid` claim of an ID
/// token. Object ids are GUIDs, which compare without regard to case; kept trimmed and in
/// lower case from the moment they are read, two spellings of one id are one value.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct ObjectId(String);

impl ObjectId {
    pub fn new(id: impl Into<String>) -> Self {
        let mut id: String = id.into();
        if id
            .bytes()
            .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace())
        {
            id = id.trim().to_ascii_lowercase();
        }
        ObjectId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id Graph left out (`null` or missing in an answer).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for ObjectId {
    fn from(id: String) -> Self {
        ObjectId::new(id)
    }
}

impl From<&str> for ObjectId {
    fn from(id: &str) -> Self {
        ObjectId::new(id)
    }
}

/// What both identifiers share: shown as the bare string, compared with one, looked up by
/// one in a map.
macro_rules! string_id {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id!(TenantId);
string_id!(ObjectId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_checked_where_they_enter() {
        assert_eq!(TenantId::parse("acme-1_b").unwrap().as_str(), "acme-1_b");
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert_eq!(TenantId::parse(bad), Err(InvalidTenantId(bad.to_owned())));
        }
        let err: Result<TenantId, _> = serde_json::from_str("\"../etc\"");
        assert!(err.unwrap_err().to_string().contains("not a tenant id"));
        let ok: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"acme\"");
    }

    #[test]
    fn object_ids_are_one_value_whatever_their_case() {
        let oid = ObjectId::from(" 0B1C-aa\n");
        assert_eq!(oid, ObjectId::new("0b1c-AA"));
        assert_eq!(oid.to_string(), "0b1c-aa");
        assert_eq!(format!("{oid:?}"), "\"0b1c-aa\"");
        assert!(oid == "0b1c-aa");
        let read: ObjectId = serde_json::from_str("\"0B1C-AA\"").unwrap();
        assert_eq!(read, oid);
        let map: std::collections::HashMap<ObjectId, u8> = [(oid, 1)].into();
        assert_eq!(map.get("0b1c-aa"), Some(&1));
    }
}
