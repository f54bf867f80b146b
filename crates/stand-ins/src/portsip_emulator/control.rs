//! What a PBX administrator does by hand (users made, edited or deleted on the PBX itself,
//! company contacts added there) and the control API under `/_pbx/` that exposes it, with
//! faults, statistics, the token lifetime and the clock, for tests that run the stand-in as
//! its own process. Hand edits obey PortSIP's prose rules and uniqueness, as the PBX's own
//! web pages would; they skip the OpenAPI schema, so drift of any kind can be staged.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::rules::{extension_problem, pin_problem, username_problem};
use super::state::{Inner, as_map};
use super::tenant::{StoredContact, TenantState};
use super::wire::Fail;
use super::{LocalUserSpec, PbxEmulator, PbxFaults};

/// Why a hand edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HandError {
    #[error("no tenant has the SIP domain {0}")]
    NoTenant(String),
    #[error("no user {0} in this tenant")]
    NoUser(String),
    #[error("{field} {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> HandError {
    HandError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

impl From<HandError> for Fail {
    fn from(e: HandError) -> Fail {
        match &e {
            HandError::NoTenant(_) | HandError::NoUser(_) => {
                Fail::new(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string())
            }
            HandError::Invalid { field, .. } => Fail::invalid(field, e.to_string()),
        }
    }
}

fn tenant<T>(
    emu: &Inner,
    domain: &str,
    f: impl FnOnce(&mut TenantState) -> Result<T, HandError>,
) -> Result<T, HandError> {
    (emu.with_tenant(domain, f)).unwrap_or_else(|| Err(HandError::NoTenant(domain.to_string())))
}

/// A user made by hand on the PBX: a standard user, enabled, bound to nobody.
pub(crate) fn add_local_user(
    emu: &Inner,
    domain: &str,
    user: &LocalUserSpec,
) -> Result<String, HandError> {
    if let Some(p) = username_problem(&user.name) {
        return Err(invalid("name", p));
    }
    if let Some(p) = extension_problem(&user.extension_number) {
        return Err(invalid("extension_number", p));
    }
    let display_name = if user.display_name.is_empty() {
        &user.name
    } else {
        &user.display_name
    };
    let mut fields = as_map(json!({"name": user.name, "password": user.password,
        "display_name": display_name, "role": "StandardUser", "enabled": true,
        "extension_number": user.extension_number}));
    if let Some(email) = &user.email {
        fields.insert("email".into(), Value::from(email.clone()));
    }
    tenant(emu, domain, |t| {
        if let Some((field, message)) =
            t.clash(Some(&user.name), Some(&user.extension_number), None)
        {
            return Err(invalid(field, message));
        }
        Ok(emu.insert_user(t, fields, None, false))
    })
}

/// Changes a user by hand: any field (`null` removes one), `ms365_binding` (`""` or
/// `null` unbinds), a new password. `id`, `created_at` and `created_by` are PortSIP's.
pub(crate) fn edit_user(
    emu: &Inner,
    domain: &str,
    id: &str,
    fields: Value,
) -> Result<(), HandError> {
    let Value::Object(fields) = fields else {
        return Err(invalid("body", "must be a JSON object of fields"));
    };
    check_hand_edit(&fields)?;
    tenant(emu, domain, |t| {
        let name = fields.get("name").and_then(Value::as_str);
        let number = fields.get("extension_number").and_then(Value::as_str);
        if let Some((field, message)) = t.clash(name, number, Some(id)) {
            return Err(invalid(field, message));
        }
        let binding = fields.get("ms365_binding").and_then(Value::as_str);
        if binding
            .and_then(|b| t.bound_to(b))
            .is_some_and(|u| u.id != id)
        {
            return Err(invalid("ms365_binding", "is bound to another user"));
        }
        let edited = t.update(id, |user| {
            for (key, value) in fields {
                match (key.as_str(), value) {
                    ("ms365_binding", Value::String(b)) if !b.is_empty() => {
                        user.ms365_binding = Some(b)
                    }
                    ("ms365_binding", _) => user.ms365_binding = None,
                    (_, Value::Null) => drop(user.fields.remove(&key)),
                    (_, value) => drop(user.fields.insert(key, value)),
                }
            }
        });
        edited.ok_or_else(|| HandError::NoUser(id.to_string()))
    })
}

/// A prose rule: what is wrong with a value, if anything.
type Rule = fn(&str) -> Option<&'static str>;

/// The fields a hand edit is checked on, as the PBX's own pages check them.
const HAND_RULES: [(&str, Rule); 3] = [
    ("name", username_problem),
    ("extension_number", extension_problem),
    ("voicemail_pin", pin_problem),
];

fn check_hand_edit(fields: &Map<String, Value>) -> Result<(), HandError> {
    for fixed in ["id", "created_at", "created_by"] {
        if fields.contains_key(fixed) {
            return Err(invalid(fixed, "cannot be changed"));
        }
    }
    for (field, check) in HAND_RULES {
        match fields.get(field) {
            None => {}
            Some(Value::String(s)) => {
                if let Some(p) = check(s) {
                    return Err(invalid(field, p));
                }
            }
            Some(_) => return Err(invalid(field, "must be a string")),
        }
    }
    Ok(())
}

/// A company contact added by hand on the PBX.
pub(crate) fn add_contact(emu: &Inner, domain: &str, fields: Value) -> Result<String, HandError> {
    let Value::Object(fields) = fields else {
        return Err(invalid("body", "must be a JSON object of fields"));
    };
    let id = emu.new_id();
    let contact = StoredContact {
        seq: emu.next_seq(),
        fields,
    };
    tenant(emu, domain, |t| {
        t.add_contact(id.clone(), contact);
        Ok(id.clone())
    })
}

/// The control API: `/_pbx/…`.
pub(crate) fn routes() -> axum::Router<Arc<Inner>> {
    axum::Router::new()
        .route("/_pbx/stats", get(stats))
        .route("/_pbx/reset_stats", post(reset_stats))
        .route("/_pbx/faults", get(faults).post(set_faults))
        .route("/_pbx/token_lifetime", post(token_lifetime))
        .route("/_pbx/advance_clock", post(advance_clock))
        .route("/_pbx/token_owner", post(token_owner))
        .route("/_pbx/tenants/{domain}/users", get(users).post(new_user))
        .route("/_pbx/tenants/{domain}/users/{id}", post(edit))
        .route("/_pbx/tenants/{domain}/users/{id}/destroy", post(destroy))
        .route(
            "/_pbx/tenants/{domain}/contacts",
            get(contacts).post(new_contact),
        )
}

type Emu = State<Arc<Inner>>;
type Answer = Result<Response, Fail>;

fn emulator(emu: &Arc<Inner>) -> PbxEmulator {
    PbxEmulator { inner: emu.clone() }
}

/// A control body; a malformed one answers 400 in PortSIP's shape, not axum's plain text.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Fail> {
    serde_json::from_slice(bytes).map_err(|e| Fail::invalid("body", format!("body: {e}")))
}

fn done() -> Answer {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn created(id: String) -> Answer {
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

async fn stats(State(emu): Emu) -> Response {
    Json(emulator(&emu).stats()).into_response()
}

async fn reset_stats(State(emu): Emu) -> Answer {
    emulator(&emu).reset_stats();
    done()
}

async fn faults(State(emu): Emu) -> Response {
    Json(emulator(&emu).faults()).into_response()
}

async fn set_faults(State(emu): Emu, bytes: Bytes) -> Answer {
    let faults: PbxFaults = parse(&bytes)?;
    if let Some(problem) = faults.problem() {
        return Err(Fail::invalid("body", problem));
    }
    emulator(&emu).set_faults(faults);
    done()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seconds {
    seconds: f64,
}

fn duration(bytes: &[u8]) -> Result<Duration, Fail> {
    let Seconds { seconds } = parse(bytes)?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| Fail::invalid("seconds", "seconds must be a number of seconds, 0 or more"))
}

async fn token_lifetime(State(emu): Emu, bytes: Bytes) -> Answer {
    emulator(&emu).set_token_lifetime(duration(&bytes)?);
    done()
}

async fn advance_clock(State(emu): Emu, bytes: Bytes) -> Answer {
    emulator(&emu).advance_clock(duration(&bytes)?);
    done()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    access_token: String,
}

async fn token_owner(State(emu): Emu, bytes: Bytes) -> Answer {
    let Token { access_token } = parse(&bytes)?;
    let (domain, username) = (emulator(&emu).token_owner(&access_token))
        .ok_or_else(|| Fail::not_found("live access token"))?;
    Ok(Json(json!({"domain": domain, "username": username})).into_response())
}

fn known_tenant(emu: &Inner, domain: &str) -> Result<(), Fail> {
    tenant(emu, domain, |_| Ok(())).map_err(Fail::from)
}

async fn users(State(emu): Emu, Path(domain): Path<String>) -> Answer {
    known_tenant(&emu, &domain)?;
    Ok(Json(emulator(&emu).users(&domain)).into_response())
}

async fn contacts(State(emu): Emu, Path(domain): Path<String>) -> Answer {
    known_tenant(&emu, &domain)?;
    Ok(Json(emulator(&emu).contacts(&domain)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLocal {
    name: String,
    extension_number: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    password: String,
}

async fn new_user(State(emu): Emu, Path(domain): Path<String>, bytes: Bytes) -> Answer {
    let u: NewLocal = parse(&bytes)?;
    let spec = LocalUserSpec {
        display_name: u.display_name.unwrap_or_default(),
        name: u.name,
        extension_number: u.extension_number,
        email: u.email,
        password: u.password,
    };
    created(add_local_user(&emu, &domain, &spec)?)
}

async fn edit(State(emu): Emu, Path((domain, id)): Path<(String, String)>, bytes: Bytes) -> Answer {
    edit_user(&emu, &domain, &id, parse(&bytes)?)?;
    done()
}

async fn destroy(State(emu): Emu, Path((domain, id)): Path<(String, String)>) -> Answer {
    known_tenant(&emu, &domain)?;
    if !emulator(&emu).delete_user(&domain, &id) {
        return Err(HandError::NoUser(id).into());
    }
    done()
}

async fn new_contact(State(emu): Emu, Path(domain): Path<String>, bytes: Bytes) -> Answer {
    created(add_contact(&emu, &domain, parse(&bytes)?)?)
}
