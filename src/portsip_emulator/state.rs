//! The stand-in's world: tenants by SIP domain, their users and company contacts (stored as
//! the JSON PortSIP was sent, passwords apart), access and refresh tokens with a clock
//! tests can move, injected faults and request statistics. PortSIP's prose rules live here:
//! usernames, reserved names, voicemail PINs, unique names and extension numbers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{LocalUserSpec, PbxFaults, PbxStats, PbxTenantSpec};

/// Fields `GET /users` answers with.
pub(crate) const LISTED_USER_FIELDS: &[&str] = &[
    "name",
    "enabled",
    "email",
    "display_name",
    "role",
    "mobile_phone",
    "work_phone",
    "home_phone",
    "address",
    "department",
    "extension_number",
];
/// Fields never shown by any answer.
const SECRET_FIELDS: &[&str] = &["password", "extension_password", "voicemail_pin"];

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One PBX user.
#[derive(Debug, Clone)]
pub(crate) struct StoredUser {
    pub id: String,
    /// What was sent (secrets included; never shown).
    pub fields: Map<String, Value>,
    pub ms365_binding: Option<String>,
    /// The username whose token created it; `None` for users made through the control API.
    pub created_by: Option<String>,
    pub created_at: i64,
}

impl StoredUser {
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).and_then(Value::as_str).unwrap_or("")
    }

    pub fn role(&self) -> &str {
        self.get("role")
    }

    /// As `GET /users` lists it.
    pub fn listed(&self) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), Value::from(self.id.clone()));
        for key in LISTED_USER_FIELDS {
            if let Some(v) = self.fields.get(*key) {
                out.insert((*key).into(), v.clone());
            }
        }
        out.entry("enabled").or_insert(Value::Bool(true));
        out.insert("created_at".into(), Value::from(rfc3339(self.created_at)));
        Value::Object(out)
    }

    /// As the control API shows it: everything but the secrets.
    pub fn shown(&self) -> Value {
        let mut out = self.fields.clone();
        for key in SECRET_FIELDS {
            out.remove(*key);
        }
        out.insert("id".into(), Value::from(self.id.clone()));
        out.entry("enabled").or_insert(Value::Bool(true));
        let binding = self.ms365_binding.clone().unwrap_or_default();
        out.insert("ms365_binding".into(), Value::from(binding));
        out.insert("created_by".into(), json!(self.created_by));
        Value::Object(out)
    }
}

#[derive(Debug, Default)]
pub(crate) struct TenantState {
    pub domain: String,
    pub users: BTreeMap<String, StoredUser>,
    pub contacts: BTreeMap<String, Map<String, Value>>,
}

/// Who a token belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub domain: String,
    pub user_id: String,
    pub expires_at: i64,
}

pub(crate) struct FaultState {
    pub faults: PbxFaults,
    pub rng: fastrand::Rng,
}

pub(crate) struct Inner {
    pub tenants: Mutex<HashMap<String, TenantState>>,
    pub sessions: Mutex<HashMap<String, Session>>,
    /// Refresh token → access token it belongs to.
    pub refresh: Mutex<HashMap<String, String>>,
    pub faults: Mutex<FaultState>,
    pub stats: Mutex<PbxStats>,
    pub token_lifetime: AtomicI64,
    pub clock_offset: AtomicI64,
    next_id: AtomicU64,
    seed: u64,
}

impl Inner {
    pub fn new(seed: u64, tenants: &[PbxTenantSpec]) -> Inner {
        let inner = Inner {
            tenants: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashMap::new()),
            faults: Mutex::new(FaultState {
                faults: PbxFaults::default(),
                rng: fastrand::Rng::with_seed(seed),
            }),
            stats: Mutex::new(PbxStats::default()),
            token_lifetime: AtomicI64::new(1800),
            clock_offset: AtomicI64::new(0),
            next_id: AtomicU64::new(700_551_909_773_148_000),
            seed,
        };
        for spec in tenants {
            inner.add_tenant(spec);
        }
        inner
    }

    fn add_tenant(&self, spec: &PbxTenantSpec) {
        let mut tenant = TenantState {
            domain: spec.domain.to_lowercase(),
            ..TenantState::default()
        };
        let admin = json!({"name": spec.admin_username, "password": spec.admin_password,
            "display_name": "Tenant Administrator", "role": "Admin", "enabled": true,
            "extension_number": "101", "email": format!("admin@{}", spec.domain)});
        self.insert_user(&mut tenant, as_map(admin), None);
        for local in &spec.local_users {
            let fields = local_fields(local);
            self.insert_user(&mut tenant, fields, None);
        }
        lock(&self.tenants).insert(tenant.domain.clone(), tenant);
    }

    /// A PortSIP-looking id: base64 of a large decimal number.
    pub fn new_id(&self) -> String {
        use base64::Engine as _;
        let n = self
            .next_id
            .fetch_add(1 + (self.seed % 7), Ordering::Relaxed);
        base64::engine::general_purpose::STANDARD.encode(n.to_string())
    }

    pub fn insert_user(
        &self,
        tenant: &mut TenantState,
        fields: Map<String, Value>,
        created_by: Option<String>,
    ) -> String {
        let id = self.new_id();
        let user = StoredUser {
            id: id.clone(),
            fields,
            ms365_binding: None,
            created_by,
            created_at: self.now(),
        };
        tenant.users.insert(id.clone(), user);
        id
    }

    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        real + self.clock_offset.load(Ordering::Relaxed)
    }

    /// A new session for a user: (access, refresh, lifetime).
    pub fn open_session(&self, domain: &str, user_id: &str) -> (String, String, i64) {
        let lifetime = self.token_lifetime.load(Ordering::Relaxed);
        let access = random_token();
        let refresh = random_token();
        let session = Session {
            domain: domain.to_string(),
            user_id: user_id.to_string(),
            expires_at: self.now() + lifetime,
        };
        lock(&self.sessions).insert(access.clone(), session);
        lock(&self.refresh).insert(refresh.clone(), access.clone());
        (access, refresh, lifetime)
    }

    /// The live session of an access token.
    pub fn session(&self, access: &str) -> Option<Session> {
        let session = lock(&self.sessions).get(access).cloned()?;
        (session.expires_at > self.now()).then_some(session)
    }

    pub fn count(&self, operation: &str) {
        let mut stats = lock(&self.stats);
        stats.total_requests += 1;
        *stats.requests.entry(operation.to_string()).or_default() += 1;
    }

    pub fn reject(&self, operation: &str) {
        *lock(&self.stats)
            .schema_rejections
            .entry(operation.to_string())
            .or_default() += 1;
    }
}

pub(crate) fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn local_fields(local: &LocalUserSpec) -> Map<String, Value> {
    let mut m = as_map(json!({"name": local.name, "password": local.password,
        "display_name": local.display_name, "role": "StandardUser", "enabled": true,
        "extension_number": local.extension_number}));
    if let Some(email) = &local.email {
        m.insert("email".into(), Value::from(email.clone()));
    }
    m
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// RFC 3339 of epoch seconds.
pub(crate) fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// PortSIP's username rule; `None` when valid.
pub(crate) fn username_problem(name: &str) -> Option<&'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-'.".contains(c);
    if !name.chars().all(allowed) {
        return Some("may only hold letters, digits, _ - ' and .");
    }
    if name.starts_with('.') || name.ends_with('.') {
        return Some("must not start or end with a period");
    }
    let reserved = ["admin", "system", "administrator", "root"];
    if reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Some("is reserved for the system administrator");
    }
    None
}

/// PortSIP's voicemail PIN rule; `None` when valid.
pub(crate) fn pin_problem(pin: &str) -> Option<&'static str> {
    let digits: Vec<i32> = pin
        .bytes()
        .map(|b| i32::from(b) - i32::from(b'0'))
        .collect();
    if !(6..=10).contains(&digits.len()) || digits.iter().any(|d| !(0..=9).contains(d)) {
        return Some("must be 6-10 digits");
    }
    let bad_run = digits.windows(3).any(|w| {
        let (a, b) = (w[1] - w[0], w[2] - w[1]);
        a == b && a.abs() <= 1
    });
    bad_run.then_some("must not repeat a digit three times or run three in sequence")
}

impl TenantState {
    /// A user with this name (case-insensitive) or extension, other than `except`.
    pub fn clash(
        &self,
        name: Option<&str>,
        ext: Option<&str>,
        except: Option<&str>,
    ) -> Option<String> {
        self.users
            .values()
            .filter(|u| Some(u.id.as_str()) != except)
            .find_map(|u| {
                if name.is_some_and(|n| u.get("name").eq_ignore_ascii_case(n)) {
                    Some(format!("the username {} is taken", u.get("name")))
                } else if ext.is_some_and(|e| u.get("extension_number") == e) {
                    Some(format!(
                        "the extension number {} is taken",
                        u.get("extension_number")
                    ))
                } else {
                    None
                }
            })
    }
}

/// Time to hold a request that is made to time out.
pub(crate) fn delay(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
