//! What every PortSIP route shares: the error answer in PortSIP's shape
//! (`{"errors":[{"code","message","detail":{"field"}}]}`), the request body parsed and
//! validated against its operation's schema, PortSIP's prose rules, `top`/`skip`, and the
//! bearer-token guards. Every refusal of a request's content is counted as a schema
//! rejection of its operation, so a test can assert that the gateway sent none.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::schema;
use super::state::Inner;
use super::tenant::TenantState;

/// An error answer.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status} {code}: {message}")]
pub(crate) struct Fail {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// `detail.field`: the JSON path of the offending field.
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

    pub fn invalid(field: &str, message: impl Into<String>) -> Fail {
        let fail = Fail::new(StatusCode::BAD_REQUEST, "VALIDATE_FAILED", message);
        fail.on(field)
    }

    pub fn conflict(field: &str, message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::CONFLICT, "CONFLICT", message).on(field)
    }

    pub fn unauthorized(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn not_found(what: &str) -> Fail {
        Fail::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} not found"),
        )
    }

    /// An injected fault: the code PortSIP would give the status.
    pub fn injected(status: StatusCode) -> Fail {
        let code = match status.as_u16() {
            400 => "VALIDATE_FAILED",
            401 => "UNAUTHORIZED",
            403 => "FORBIDDEN",
            404 => "NOT_FOUND",
            409 => "CONFLICT",
            429 => "TOO_MANY_REQUESTS",
            _ => "INTERNAL",
        };
        Fail::new(
            status,
            code,
            format!("injected fault: HTTP {}", status.as_u16()),
        )
    }

    fn on(mut self, field: &str) -> Fail {
        self.field = Some(field.to_string());
        self
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["detail"] = json!({ "field": field });
        }
        let mut response = (self.status, Json(json!({ "errors": [error] }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

pub(crate) type Answer = Result<Response, Fail>;

/// One operation of the document: lower-case method and the document's path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    pub method: &'static str,
    pub path: &'static str,
}

impl Op {
    pub const fn get(path: &'static str) -> Op {
        Op {
            method: "get",
            path,
        }
    }

    pub const fn post(path: &'static str) -> Op {
        Op {
            method: "post",
            path,
        }
    }

    /// Its name in the statistics: `POST /users/{id}`.
    pub fn key(self) -> String {
        format!("{} {}", self.method.to_ascii_uppercase(), self.path)
    }

    /// Counts `fail` as a rejection of this operation's request and passes it on.
    pub fn reject(self, emu: &Inner, fail: Fail) -> Fail {
        emu.reject(&self.key());
        fail
    }
}

/// The body as JSON (`Null` when empty), validated against the operation's schema.
pub(crate) fn json_body(emu: &Inner, op: Op, bytes: &[u8]) -> Result<Value, Fail> {
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(bytes).map_err(|e| {
            op.reject(
                emu,
                Fail::invalid("body", format!("the body is not JSON: {e}")),
            )
        })?
    };
    schema::validate_body(op.method, op.path, &value)
        .map_err(|v| op.reject(emu, Fail::invalid(&v.field, v.to_string())))?;
    Ok(value)
}

/// One of PortSIP's prose rules: `problem` is what is wrong with `field`, if anything.
pub(crate) fn rule(emu: &Inner, op: Op, field: &str, problem: Option<&str>) -> Result<(), Fail> {
    match problem {
        Some(p) => Err(op.reject(emu, Fail::invalid(field, format!("{field} {p}")))),
        None => Ok(()),
    }
}

/// Query parameters the document names but the stand-in does not carry out: refusing
/// them beats answering as if a filter had been applied.
const NOT_IMPLEMENTED: [&str; 3] = ["filter", "search", "orderby"];

/// `top` (1–100, default 100) and `skip` (default 0), checked against their schemas.
pub(crate) fn paging(
    emu: &Inner,
    op: Op,
    query: &[(String, String)],
) -> Result<(usize, usize), Fail> {
    let (mut top, mut skip) = (100, 0);
    for (name, text) in query {
        if NOT_IMPLEMENTED.contains(&name.as_str()) {
            let fail = Fail::invalid(name, format!("{name} is not implemented by the stand-in"));
            return Err(op.reject(emu, fail));
        }
        let Some(schema) = schema::query_schema(op.method, op.path, name) else {
            let fail = Fail::invalid(name, format!("{name} is not a parameter of {}", op.key()));
            return Err(op.reject(emu, fail));
        };
        // A query value is text; it is judged as the number it spells, if it spells one.
        let value = (text.parse::<i64>().map(Value::from))
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::from(text.as_str()));
        schema::validate(&value, schema, name)
            .map_err(|v| op.reject(emu, Fail::invalid(&v.field, v.to_string())))?;
        let n = value.as_u64().unwrap_or_default() as usize;
        match name.as_str() {
            "top" => top = n,
            _ => skip = n,
        }
    }
    Ok((top, skip))
}

/// `{count, items}`: `count` is the whole list's, `items` one page of it.
pub(crate) fn page((count, items): (usize, Vec<Value>)) -> Response {
    Json(json!({"count": count, "items": items})).into_response()
}

/// The signed-in user behind a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub domain: String,
    pub user_id: String,
    pub name: String,
    pub role: String,
    pub access_token: String,
    pub expires_at: u64,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller: a live token of a user who still exists and is enabled.
pub(crate) fn caller(emu: &Inner, headers: &HeaderMap) -> Result<Caller, Fail> {
    let token = bearer(headers).ok_or_else(|| Fail::unauthorized("sign in first"))?;
    let session = (emu.session(token))
        .ok_or_else(|| Fail::unauthorized("the access token is unknown or has expired"))?;
    let user = emu.with_tenant(&session.domain, |t| {
        let u = t.user(&session.user_id)?;
        Some((u.get("name").to_string(), u.role().to_string(), u.enabled()))
    });
    let Some(Some((name, role, enabled))) = user else {
        return Err(Fail::unauthorized("the signed-in user no longer exists"));
    };
    if !enabled {
        return Err(Fail::forbidden(format!("the user {name} is disabled")));
    }
    Ok(Caller {
        domain: session.domain,
        user_id: session.user_id,
        name,
        role,
        access_token: token.to_string(),
        expires_at: session.expires_at,
    })
}

/// The caller, who must be a tenant administrator (role `Admin`).
pub(crate) fn admin(emu: &Inner, headers: &HeaderMap) -> Result<Caller, Fail> {
    let caller = caller(emu, headers)?;
    if caller.role != "Admin" {
        let message = format!(
            "{} ({}) is not a tenant administrator",
            caller.name, caller.role
        );
        return Err(Fail::forbidden(message));
    }
    Ok(caller)
}

/// Runs `f` on the caller's tenant: a token never reaches another tenant's data.
pub(crate) fn in_tenant<T>(
    emu: &Inner,
    caller: &Caller,
    f: impl FnOnce(&mut TenantState) -> Result<T, Fail>,
) -> Result<T, Fail> {
    emu.with_tenant(&caller.domain, f)
        .unwrap_or_else(|| Err(Fail::unauthorized("the tenant no longer exists")))
}
