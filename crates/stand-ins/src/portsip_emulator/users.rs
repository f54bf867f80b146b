//! The tenant administrator's user management: `GET/POST /users`, `GET/POST /users/{id}`,
//! `POST /users/{id}/destroy` and the Microsoft 365 binding. Bodies pass the OpenAPI
//! schema first, then PortSIP's prose rules (username, extension number, voicemail PIN),
//! then uniqueness within the tenant (409). Answers show what PortSIP's answer schemas
//! name, never a password.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::rules::{extension_problem, pin_problem, username_problem};
use super::schema;
use super::state::{Inner, as_map};
use super::wire::{Answer, Fail, Op, admin, in_tenant, json_body, page, paging, rule};

const LIST: Op = Op::get("/users");
const CREATE: Op = Op::post("/users");
const UPDATE: Op = Op::post("/users/{id}");
const DESTROY: Op = Op::post("/users/{id}/destroy");
const BIND: Op = Op::post("/users/{id}/ms365_binding");
const UNBIND: Op = Op::post("/users/{id}/ms365_binding/destroy");

type Emu = State<Arc<Inner>>;

/// The fields `GET /users` lists and `GET /users/{id}` shows, from the answer schemas.
fn listed() -> &'static BTreeSet<&'static str> {
    static FIELDS: OnceLock<BTreeSet<&'static str>> = OnceLock::new();
    FIELDS.get_or_init(|| schema::response_fields("get", "/users"))
}

fn detailed() -> &'static BTreeSet<&'static str> {
    static FIELDS: OnceLock<BTreeSet<&'static str>> = OnceLock::new();
    FIELDS.get_or_init(|| schema::response_fields("get", "/users/{id}"))
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `GET /users?top&skip`, in creation order.
pub(crate) async fn list(
    State(emu): Emu,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Answer {
    let c = admin(&emu, &headers)?;
    let (top, skip) = paging(&emu, LIST, &query)?;
    let listing = in_tenant(&emu, &c, |t| {
        let items = t.users_page(skip, top).map(|u| u.view(listed()));
        Ok((t.user_count(), items.collect()))
    })?;
    Ok(page(listing))
}

/// `POST /users` → 201 `{id}`.
pub(crate) async fn create(State(emu): Emu, headers: HeaderMap, bytes: Bytes) -> Answer {
    let c = admin(&emu, &headers)?;
    let v = json_body(&emu, CREATE, &bytes)?;
    // The schema made these present strings.
    let name = text(&v, "name").unwrap_or_default();
    let number = text(&v, "extension_number").unwrap_or_default();
    rule(&emu, CREATE, "name", username_problem(name))?;
    rule(&emu, CREATE, "extension_number", extension_problem(number))?;
    let pin = text(&v, "voicemail_pin").unwrap_or_default();
    rule(&emu, CREATE, "voicemail_pin", pin_problem(pin))?;
    let id = in_tenant(&emu, &c, |t| {
        if let Some((field, message)) = t.clash(Some(name), Some(number), None) {
            emu.conflict(&CREATE.key());
            return Err(Fail::conflict(field, message));
        }
        let fields = as_map(v.clone());
        Ok(emu.insert_user(t, fields, Some(c.name.clone()), false))
    })?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

/// `GET /users/{id}`.
pub(crate) async fn get(State(emu): Emu, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let c = admin(&emu, &headers)?;
    let user = in_tenant(&emu, &c, |t| {
        (t.user(&id))
            .map(|u| u.view(detailed()))
            .ok_or_else(|| Fail::not_found("user"))
    })?;
    Ok(Json(user).into_response())
}

/// `POST /users/{id}`: the fields present are changed, the others kept.
pub(crate) async fn update(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let c = admin(&emu, &headers)?;
    let v = json_body(&emu, UPDATE, &bytes)?;
    if let Some(pin) = text(&v, "voicemail_pin") {
        rule(&emu, UPDATE, "voicemail_pin", pin_problem(pin))?;
    }
    in_tenant(&emu, &c, |t| {
        // The update schema names no unique field, so no clash can arise here.
        t.update(&id, |user| user.fields.extend(as_map(v)))
            .ok_or_else(|| Fail::not_found("user"))
    })?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /users/{id}/destroy` → 204.
pub(crate) async fn destroy(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let c = admin(&emu, &headers)?;
    json_body(&emu, DESTROY, &bytes)?;
    in_tenant(&emu, &c, |t| {
        t.remove_user(&id)
            .map(drop)
            .ok_or_else(|| Fail::not_found("user"))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /users/{id}/ms365_binding {id}`: one Microsoft 365 user (OID or UPN) is bound to
/// one PBX user at most.
pub(crate) async fn bind(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let c = admin(&emu, &headers)?;
    let v = json_body(&emu, BIND, &bytes)?;
    let target = text(&v, "id").unwrap_or_default().trim().to_string();
    let missing = target
        .is_empty()
        .then_some("is required: the OID or UPN to bind to");
    rule(&emu, BIND, "id", missing)?;
    in_tenant(&emu, &c, |t| {
        if t.user(&id).is_none() {
            return Err(Fail::not_found("user"));
        }
        if t.bound_to(&target).is_some_and(|u| u.id != id) {
            emu.conflict(&BIND.key());
            return Err(Fail::conflict(
                "id",
                format!("{target} is bound to another user"),
            ));
        }
        t.update(&id, |user| user.ms365_binding = Some(target));
        Ok(())
    })?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /users/{id}/ms365_binding/destroy` → 204.
pub(crate) async fn unbind(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let c = admin(&emu, &headers)?;
    json_body(&emu, UNBIND, &bytes)?;
    in_tenant(&emu, &c, |t| {
        t.update(&id, |user| user.ms365_binding = None)
            .ok_or_else(|| Fail::not_found("user"))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
