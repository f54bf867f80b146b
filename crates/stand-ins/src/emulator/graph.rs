//! Graph's route table and the plumbing shared by every `/v1.0` route: the bearer-token
//! check (signature, expiry, audience = the emulator's own base URL, tenant) and the
//! permission check; Graph's error body
//! (`{"error":{"code","message","innerError":{date, request-id, client-request-id}}}`)
//! filled in by one envelope middleware that also stamps `request-id`/`client-request-id`;
//! `$select`/`$top` handling. Paging and delta tokens are in `delta`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::keys::Jwt;
use super::state::Tenant;
use super::util::{graph_date, guid};
use super::{Emulator, batch, outlook, subscriptions, users};

pub(crate) type QueryMap = HashMap<String, String>;

/// The Graph v1.0 routes the emulator serves.
pub(crate) fn routes() -> Router<Emulator> {
    let folder = "/v1.0/users/{id}/contactFolders/{fid}";
    Router::new()
        .route("/v1.0/users", get(users::list))
        .route("/v1.0/users/delta", get(users::delta))
        .route("/v1.0/users/microsoft.graph.delta()", get(users::delta))
        .route("/v1.0/users/{id}", get(users::get))
        .route("/v1.0/me", get(users::me))
        .route("/v1.0/groups", get(users::groups))
        .route(
            "/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user",
            get(users::transitive_members),
        )
        .route("/v1.0/users/{id}/photo", get(outlook::photo))
        .route("/v1.0/users/{id}/photo/$value", get(outlook::photo_value))
        .route("/v1.0/users/{id}/contacts", get(outlook::contacts))
        .route("/v1.0/users/{id}/contacts/delta", get(outlook::delta))
        .route("/v1.0/users/{id}/contacts/{cid}", get(outlook::contact))
        .route("/v1.0/users/{id}/contactFolders", get(outlook::folders))
        .route(folder, get(outlook::folder))
        .route(&format!("{folder}/contacts"), get(outlook::folder_contacts))
        .route(
            &format!("{folder}/contacts/delta"),
            get(outlook::folder_delta),
        )
        .route("/v1.0/$batch", post(batch::batch))
        .route(
            "/v1.0/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route(
            "/v1.0/subscriptions/{id}",
            get(subscriptions::get)
                .patch(subscriptions::renew)
                .delete(subscriptions::delete),
        )
        .route(
            "/v1.0/subscriptions/{id}/reauthorize",
            post(subscriptions::reauthorize),
        )
}

/// A Graph failure; rendered (with the request's ids) by [`envelope`].
#[derive(Debug, Clone)]
pub(crate) struct GraphError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    headers: Vec<(&'static str, String)>,
}

impl GraphError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        GraphError {
            status,
            code: code.into(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        GraphError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        GraphError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn retry_after(mut self, seconds: Option<String>) -> Self {
        if let Some(s) = seconds {
            self.headers.push(("retry-after", s));
        }
        self
    }

    fn unauthorized(base: &str, message: &str) -> Self {
        let mut err = GraphError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        );
        err.headers.push((
            "www-authenticate",
            format!(
                "Bearer realm=\"\", authorization_uri=\"{base}/common/oauth2/authorize\", \
             client_id=\"00000003-0000-0000-c000-000000000000\""
            ),
        ));
        err
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.headers_mut().insert(*name, value);
            }
        }
        response.extensions_mut().insert(self);
        response
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    pub request_id: String,
    pub client_request_id: String,
}

/// Outermost middleware: gives every request its ids, echoes the caller's
/// `client-request-id`, and writes any [`GraphError`] as Graph's JSON error body.
pub(crate) async fn envelope(
    State(emu): State<Emulator>,
    mut req: Request,
    next: Next,
) -> Response {
    let request_id = guid();
    let client_request_id = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| request_id.clone(), str::to_string);
    let ids = RequestIds {
        request_id,
        client_request_id,
    };
    let graph = req.uri().path().starts_with("/v1.0");
    req.extensions_mut().insert(ids.clone());
    let mut response = next.run(req).await;
    if let Some(err) = response.extensions_mut().remove::<GraphError>() {
        let body = json!({"error": {"code": err.code, "message": err.message, "innerError": {
            "date": graph_date(emu.inner.now()),
            "request-id": ids.request_id,
            "client-request-id": ids.client_request_id,
        }}});
        *response.body_mut() = axum::body::Body::from(body.to_string());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if graph {
        for (name, value) in [
            ("request-id", &ids.request_id),
            ("client-request-id", &ids.client_request_id),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

/// Unknown `/v1.0` paths answer as Graph does; anything else is a plain 404.
pub(crate) async fn fallback(req: Request) -> Response {
    let path = req.uri().path();
    match path.strip_prefix("/v1.0/") {
        Some(rest) => {
            let segment = rest.split('/').next_back().unwrap_or(rest);
            GraphError::bad_request(
                "BadRequest",
                format!("Resource not found for the segment '{segment}'."),
            )
            .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// What a route needs the token to grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Users,
    Photos,
    Groups,
    Contacts,
}

impl Need {
    fn accepted(self) -> &'static [&'static str] {
        const USERS: &[&str] = &[
            "User.Read.All",
            "User.ReadWrite.All",
            "User.ReadBasic.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ];
        match self {
            Need::Users => USERS,
            Need::Photos => &[
                "User.Read.All",
                "User.ReadWrite.All",
                "User.ReadBasic.All",
                "Directory.Read.All",
                "Directory.ReadWrite.All",
                "ProfilePhoto.Read.All",
            ],
            Need::Groups => &[
                "GroupMember.Read.All",
                "Group.Read.All",
                "Group.ReadWrite.All",
                "Directory.Read.All",
                "Directory.ReadWrite.All",
            ],
            Need::Contacts => &["Contacts.Read", "Contacts.ReadWrite"],
        }
    }
}

/// The authenticated caller of a Graph request.
#[derive(Clone)]
pub(crate) struct Caller {
    pub tenant: Arc<Tenant>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// The signed-in user for delegated tokens.
    pub user_oid: Option<String>,
}

impl Caller {
    pub fn require(&self, need: Need) -> Result<(), GraphError> {
        let granted = self.roles.iter().chain(&self.scopes);
        if granted
            .into_iter()
            .any(|g| need.accepted().iter().any(|a| a.eq_ignore_ascii_case(g)))
        {
            return Ok(());
        }
        Err(match need {
            // Exchange answers for Outlook resources, with its own code.
            Need::Contacts => GraphError::new(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ),
            _ => GraphError::new(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ),
        })
    }
}

impl FromRequestParts<Emulator> for Caller {
    type Rejection = GraphError;

    async fn from_request_parts(parts: &mut Parts, emu: &Emulator) -> Result<Self, GraphError> {
        authenticate(emu, &parts.headers)
    }
}

fn strings(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn authenticate(emu: &Emulator, headers: &HeaderMap) -> Result<Caller, GraphError> {
    let base = emu.inner.base();
    let fail = |message: &str| GraphError::unauthorized(&base, message);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| fail("Access token is empty."))?;
    let jwt = Jwt::parse(token)
        .ok_or_else(|| fail("CompactToken parsing failed with error code: 80049217"))?;
    let key = jwt
        .header_str("kid")
        .and_then(|kid| emu.inner.keys.find(kid));
    if !key.is_some_and(|k| k.verifies(&jwt)) {
        return Err(fail("Access token validation failure. Invalid signature."));
    }
    if jwt
        .claim_time("exp")
        .is_none_or(|exp| exp + 300 < emu.inner.now())
    {
        return Err(fail("Lifetime validation failed, the token is expired."));
    }
    let aud = jwt.claim_str("aud").unwrap_or("");
    if !aud.trim_end_matches('/').eq_ignore_ascii_case(&base) {
        return Err(fail("Access token validation failure. Invalid audience."));
    }
    let tenant = jwt
        .claim_str("tid")
        .and_then(|tid| emu.inner.tenant(tid))
        .ok_or_else(|| fail("Access token validation failure. Invalid issuer."))?;
    let delegated = jwt.claim_str("idtyp") == Some("user");
    Ok(Caller {
        tenant,
        roles: strings(&jwt.claims, "roles"),
        scopes: strings(&jwt.claims, "scp"),
        user_oid: delegated.then(|| jwt.claim_str("oid").unwrap_or_default().to_string()),
    })
}

/// A query option with or without its `$` (Graph v1.0 accepts both).
pub(crate) fn param<'a>(q: &'a QueryMap, name: &str) -> Option<&'a str> {
    q.get(&format!("${name}"))
        .or_else(|| q.get(name))
        .map(String::as_str)
}

/// Options the emulator does not implement fail loudly instead of being ignored.
pub(crate) fn reject_unsupported(q: &QueryMap) -> Result<(), GraphError> {
    for name in ["filter", "orderby", "search", "expand"] {
        if param(q, name).is_some() {
            return Err(GraphError::bad_request(
                "Request_UnsupportedQuery",
                format!("The emulator does not support the query option '${name}'."),
            ));
        }
    }
    Ok(())
}

/// The `$select` list, checked against `allowed` and spelled as Graph spells each name.
pub(crate) fn select(
    q: &QueryMap,
    allowed: &[&str],
    type_name: &str,
    outlook: bool,
) -> Result<Option<Vec<String>>, GraphError> {
    let Some(raw) = param(q, "select") else {
        return Ok(None);
    };
    let mut names = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(known) = allowed.iter().find(|a| a.eq_ignore_ascii_case(name)) else {
            let code = if outlook {
                "RequestBroker--ParseUri"
            } else {
                "Request_BadRequest"
            };
            return Err(GraphError::bad_request(
                code,
                format!(
                    "Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'."
                ),
            ));
        };
        if !names.iter().any(|n| n == known) {
            names.push(known.to_string());
        }
    }
    Ok(Some(names))
}

/// Keeps the selected properties (always with `id`), else the default set, else all.
pub(crate) fn project(full: Value, select: Option<&[String]>, default: Option<&[&str]>) -> Value {
    let Value::Object(mut map) = full else {
        return full;
    };
    match (select, default) {
        (Some(names), _) => map.retain(|k, _| k == "id" || names.iter().any(|n| n == k)),
        (None, Some(names)) => map.retain(|k, _| names.contains(&k.as_str())),
        (None, None) => {}
    }
    Value::Object(map)
}

/// `#users` or `#users(displayName,mail)` for `@odata.context`.
pub(crate) fn context(emu: &Emulator, entity: &str, select: Option<&[String]>) -> String {
    let suffix = select.map_or_else(String::new, |s| format!("({})", s.join(",")));
    format!("{}/v1.0/$metadata#{entity}{suffix}", emu.inner.base())
}

/// `$top` as a page size; `None` when absent.
pub(crate) fn top(q: &QueryMap) -> Result<Option<usize>, GraphError> {
    match param(q, "top") {
        None => Ok(None),
        Some(raw) => raw.parse::<usize>().map(Some).map_err(|_| {
            GraphError::bad_request(
                "BadRequest",
                format!("Invalid value '{raw}' for query option '$top'."),
            )
        }),
    }
}

/// `Prefer: odata.maxpagesize=N`, the page-size hint delta queries honour.
pub(crate) fn max_page_size(headers: &HeaderMap) -> Option<usize> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            p.trim()
                .strip_prefix("odata.maxpagesize=")?
                .trim()
                .parse()
                .ok()
        })
}
