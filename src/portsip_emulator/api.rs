//! The PortSIP v22 REST API under `/api`: sign-in and token refresh, the current session,
//! users (with their Microsoft 365 binding) and company contacts. Every body is validated
//! against the OpenAPI document before anything else; errors come in PortSIP's shape.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::schema::{self, Violation};
use super::state::{
    Inner, Session, TenantState, as_map, lock, pin_problem, rfc3339, username_problem,
};

/// An error answer in PortSIP's shape.
#[derive(Debug)]
pub(crate) struct Fail {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl Fail {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Fail {
        Fail {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn invalid(field: &str, message: impl Into<String>) -> Fail {
        Fail {
            field: Some(field.to_string()),
            ..Fail::new(StatusCode::BAD_REQUEST, "VALIDATE_FAILED", message)
        }
    }

    fn not_found(what: &str) -> Fail {
        Fail::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} not found"),
        )
    }
}

impl From<Violation> for Fail {
    fn from(v: Violation) -> Fail {
        let message = format!("{} {}", v.field, v.message);
        Fail::invalid(&v.field, message)
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let detail = self.field.map(|f| json!({ "field": f }));
        let body =
            json!({"errors": [{"code": self.code, "message": self.message, "detail": detail}]});
        (self.status, Json(body)).into_response()
    }
}

type Emu = State<Arc<Inner>>;
type Answer = Result<Response, Fail>;

/// The body as JSON, validated against the operation's schema; violations are counted.
fn body(emu: &Inner, method: &str, path: &str, bytes: &Bytes) -> Result<Value, Fail> {
    let operation = format!("{} {path}", method.to_uppercase());
    let value: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes).map_err(|e| {
            emu.reject(&operation);
            Fail::invalid("body", format!("the body is not JSON: {e}"))
        })?
    };
    schema::validate_body(method, path, &value).map_err(|v| {
        emu.reject(&operation);
        Fail::from(v)
    })?;
    Ok(value)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn session(emu: &Inner, headers: &HeaderMap) -> Result<Session, Fail> {
    bearer(headers)
        .and_then(|t| emu.session(t))
        .ok_or_else(|| Fail::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "sign in first"))
}

/// The caller's session, which must be a tenant administrator's.
fn admin(emu: &Inner, headers: &HeaderMap) -> Result<Session, Fail> {
    let s = session(emu, headers)?;
    let tenants = lock(&emu.tenants);
    let role = tenants
        .get(&s.domain)
        .and_then(|t| t.users.get(&s.user_id))
        .map(|u| u.role().to_string())
        .unwrap_or_default();
    if role != "Admin" {
        return Err(Fail::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this needs the tenant administrator",
        ));
    }
    Ok(s)
}

fn with_tenant<T>(
    emu: &Inner,
    s: &Session,
    f: impl FnOnce(&mut TenantState) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let mut tenants = lock(&emu.tenants);
    let tenant = tenants.get_mut(&s.domain).ok_or_else(|| {
        Fail::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the tenant is gone",
        )
    })?;
    f(tenant)
}

pub(crate) async fn login(State(emu): Emu, bytes: Bytes) -> Answer {
    let v = body(&emu, "post", "/login", &bytes)?;
    let (username, password) = (
        v["username"].as_str().unwrap_or(""),
        v["password"].as_str().unwrap_or(""),
    );
    let domain = v["domain"].as_str().unwrap_or("").to_lowercase();
    let refused = || {
        Fail::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "wrong username or password",
        )
    };
    let (user_id, role, enabled) = {
        let tenants = lock(&emu.tenants);
        let tenant = tenants.get(&domain).ok_or_else(refused)?;
        let user = (tenant.users.values())
            .find(|u| u.get("name").eq_ignore_ascii_case(username))
            .filter(|u| u.get("password") == password)
            .ok_or_else(refused)?;
        let enabled = user
            .fields
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        (user.id.clone(), user.role().to_string(), enabled)
    };
    if !enabled {
        return Err(Fail::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "the user is disabled",
        ));
    }
    lock(&emu.stats).logins += 1;
    let (access, refresh, lifetime) = emu.open_session(&domain, &user_id);
    let expires = rfc3339(emu.now() + lifetime);
    Ok(Json(json!({"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
        "expires_in": lifetime, "expires_at": expires, "role": role, "id": user_id, "domain": domain}))
    .into_response())
}

/// `GET /login`: the current session.
pub(crate) async fn current(State(emu): Emu, headers: HeaderMap) -> Answer {
    let s = session(&emu, &headers)?;
    let tenants = lock(&emu.tenants);
    let user = (tenants.get(&s.domain))
        .and_then(|t| t.users.get(&s.user_id))
        .ok_or_else(|| Fail::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the user is gone"))?;
    let access = bearer(&headers).unwrap_or_default();
    Ok(Json(
        json!({"access_token": access, "expires_at": rfc3339(s.expires_at),
        "expires_in": s.expires_at - emu.now(), "role": user.role(), "id": user.id,
        "name": user.get("name"), "display_name": user.get("display_name"),
        "extension_number": user.get("extension_number"), "domain": s.domain}),
    )
    .into_response())
}

pub(crate) async fn refresh(State(emu): Emu, bytes: Bytes) -> Answer {
    let v = body(&emu, "post", "/auth/refresh_token", &bytes)?;
    let token = v["refresh_token"].as_str().unwrap_or("");
    let refused = || {
        Fail::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "unknown refresh token",
        )
    };
    // Single use: the refresh token and its access token end here.
    let old = lock(&emu.refresh).remove(token).ok_or_else(refused)?;
    let session = lock(&emu.sessions).remove(&old).ok_or_else(refused)?;
    lock(&emu.stats).refreshes += 1;
    let (access, refresh, lifetime) = emu.open_session(&session.domain, &session.user_id);
    Ok(Json(
        json!({"token_type": "Bearer", "access_token": access, "refresh_token": refresh,
        "expires_in": lifetime}),
    )
    .into_response())
}

#[derive(serde::Deserialize)]
pub(crate) struct Paging {
    top: Option<String>,
    skip: Option<String>,
}

/// `top`/`skip` validated against the parameters' schemas.
fn paging(emu: &Inner, path: &str, q: &Paging) -> Result<(usize, usize), Fail> {
    let get = |name: &str, text: &Option<String>, default: u64| -> Result<u64, Fail> {
        let Some(text) = text else { return Ok(default) };
        let value = text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::from(text.clone()));
        let schema = schema::query_schema("get", path, name).unwrap_or(&Value::Null);
        schema::validate(&value, schema, name).map_err(|v| {
            emu.reject(&format!("GET {path}"));
            Fail::from(v)
        })?;
        Ok(value.as_u64().unwrap_or(default))
    };
    let top = get("top", &q.top, 100)?;
    let skip = get("skip", &q.skip, 0)?;
    Ok((top as usize, skip as usize))
}

fn page(items: Vec<Value>, top: usize, skip: usize) -> Response {
    let count = items.len();
    let items: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
    Json(json!({"count": count, "items": items})).into_response()
}

pub(crate) async fn list_users(
    State(emu): Emu,
    headers: HeaderMap,
    Query(q): Query<Paging>,
) -> Answer {
    let s = admin(&emu, &headers)?;
    let (top, skip) = paging(&emu, "/users", &q)?;
    let items = with_tenant(&emu, &s, |t| {
        Ok(t.users.values().map(|u| u.listed()).collect())
    })?;
    Ok(page(items, top, skip))
}

pub(crate) async fn create_user(State(emu): Emu, headers: HeaderMap, bytes: Bytes) -> Answer {
    let s = admin(&emu, &headers)?;
    let v = body(&emu, "post", "/users", &bytes)?;
    let fields = as_map(v);
    let rule = |field: &str, problem: Option<&str>| match problem {
        Some(p) => Err(Fail::invalid(field, format!("{field} {p}"))),
        None => Ok(()),
    };
    let name = fields["name"].as_str().unwrap_or("").to_string();
    rule("name", username_problem(&name))?;
    rule(
        "voicemail_pin",
        pin_problem(fields["voicemail_pin"].as_str().unwrap_or("")),
    )?;
    let ext = fields["extension_number"]
        .as_str()
        .unwrap_or("")
        .to_string();
    rule(
        "extension_number",
        (!ext.bytes().all(|b| b.is_ascii_digit())).then_some("must be digits only"),
    )?;
    let creator = with_tenant(&emu, &s, |t| {
        Ok(t.users.get(&s.user_id).map(|u| u.get("name").to_string()))
    })?;
    let id = with_tenant(&emu, &s, |t| {
        if let Some(clash) = t.clash(Some(&name), Some(&ext), None) {
            return Err(Fail::new(StatusCode::CONFLICT, "CONFLICT", clash));
        }
        Ok(emu.insert_user(t, fields, creator))
    })?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

pub(crate) async fn get_user(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let s = admin(&emu, &headers)?;
    let user = with_tenant(&emu, &s, |t| {
        t.users
            .get(&id)
            .map(|u| u.listed())
            .ok_or_else(|| Fail::not_found("user"))
    })?;
    Ok(Json(user).into_response())
}

pub(crate) async fn update_user(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let s = admin(&emu, &headers)?;
    let v = body(&emu, "post", "/users/{id}", &bytes)?;
    if let Some(pin) = v.get("voicemail_pin").and_then(Value::as_str)
        && let Some(p) = pin_problem(pin)
    {
        return Err(Fail::invalid("voicemail_pin", format!("voicemail_pin {p}")));
    }
    with_tenant(&emu, &s, |t| {
        let user = t
            .users
            .get_mut(&id)
            .ok_or_else(|| Fail::not_found("user"))?;
        user.fields.extend(as_map(v));
        Ok(())
    })?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn destroy_user(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let s = admin(&emu, &headers)?;
    body(&emu, "post", "/users/{id}/destroy", &bytes)?;
    with_tenant(&emu, &s, |t| {
        t.users
            .remove(&id)
            .map(drop)
            .ok_or_else(|| Fail::not_found("user"))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn bind(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let s = admin(&emu, &headers)?;
    let v = body(&emu, "post", "/users/{id}/ms365_binding", &bytes)?;
    let oid = v["id"].as_str().unwrap_or("").to_string();
    if oid.is_empty() {
        return Err(Fail::invalid("id", "id is required"));
    }
    with_tenant(&emu, &s, |t| {
        let taken = t
            .users
            .values()
            .any(|u| u.id != id && u.ms365_binding.as_deref() == Some(oid.as_str()));
        if taken {
            return Err(Fail::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                "that Microsoft 365 user is bound to another user",
            ));
        }
        let user = t
            .users
            .get_mut(&id)
            .ok_or_else(|| Fail::not_found("user"))?;
        user.ms365_binding = Some(oid);
        Ok(())
    })?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn unbind(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let s = admin(&emu, &headers)?;
    body(&emu, "post", "/users/{id}/ms365_binding/destroy", &bytes)?;
    with_tenant(&emu, &s, |t| {
        let user = t
            .users
            .get_mut(&id)
            .ok_or_else(|| Fail::not_found("user"))?;
        user.ms365_binding = None;
        Ok(())
    })?;
    Ok(StatusCode::OK.into_response())
}

fn contact_json(id: &str, fields: &Map<String, Value>) -> Value {
    let mut out = fields.clone();
    out.insert("id".into(), Value::from(id));
    Value::Object(out)
}

pub(crate) async fn list_contacts(
    State(emu): Emu,
    headers: HeaderMap,
    Query(q): Query<Paging>,
) -> Answer {
    let s = admin(&emu, &headers)?;
    let (top, skip) = paging(&emu, "/contacts", &q)?;
    let items = with_tenant(&emu, &s, |t| {
        Ok(t.contacts
            .iter()
            .map(|(id, c)| contact_json(id, c))
            .collect())
    })?;
    Ok(page(items, top, skip))
}

pub(crate) async fn create_contact(State(emu): Emu, headers: HeaderMap, bytes: Bytes) -> Answer {
    let s = admin(&emu, &headers)?;
    let v = body(&emu, "post", "/contacts", &bytes)?;
    if v.get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(Fail::invalid("name", "name is required"));
    }
    let id = emu.new_id();
    with_tenant(&emu, &s, |t| {
        t.contacts.insert(id.clone(), as_map(v));
        Ok(())
    })?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

pub(crate) async fn get_contact(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let s = admin(&emu, &headers)?;
    let c = with_tenant(&emu, &s, |t| {
        t.contacts
            .get(&id)
            .map(|c| contact_json(&id, c))
            .ok_or_else(|| Fail::not_found("contact"))
    })?;
    Ok(Json(c).into_response())
}

pub(crate) async fn update_contact(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let s = admin(&emu, &headers)?;
    let v = body(&emu, "post", "/contacts/{id}", &bytes)?;
    with_tenant(&emu, &s, |t| {
        let contact = t
            .contacts
            .get_mut(&id)
            .ok_or_else(|| Fail::not_found("contact"))?;
        contact.extend(as_map(v));
        Ok(())
    })?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn destroy_contact(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let s = admin(&emu, &headers)?;
    body(&emu, "post", "/contacts/{id}/destroy", &bytes)?;
    with_tenant(&emu, &s, |t| {
        t.contacts
            .remove(&id)
            .map(drop)
            .ok_or_else(|| Fail::not_found("contact"))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
