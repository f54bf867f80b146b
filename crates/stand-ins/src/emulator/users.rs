//! Directory routes of Graph v1.0: `/users` (paged by index with an opaque `$skiptoken`,
//! serialising only the page), `/users/{id|upn}`, `/me`, `/users/delta` (read from the
//! tenant's change log, so a delta round costs O(changes)), `/groups` and a group's
//! `transitiveMembers/microsoft.graph.user` with nested groups flattened.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Emulator;
use super::delta::{DeltaState, decode_token, delta_link, delta_state, encode_token};
use super::graph::{
    Caller, GraphError, Need, QueryMap, context, max_page_size, param, project, reject_unsupported,
    select, top,
};
use super::model::{USER_DEFAULT_PROPERTIES, USER_PROPERTIES, User};
use super::state::{GroupRecord, Life, Member, TenantData};

const DEFAULT_TOP: usize = 100;
const MAX_TOP: usize = 999;

/// What a `/users` (or members) `$skiptoken` carries.
#[derive(Debug, Serialize, Deserialize)]
struct Page {
    o: usize,
    n: usize,
    sel: Option<Vec<String>>,
}

pub(crate) fn user_json(user: &User, sel: Option<&[String]>) -> Value {
    let full = serde_json::to_value(user).unwrap_or(Value::Null);
    project(full, sel, Some(USER_DEFAULT_PROPERTIES))
}

fn page_size(q: &QueryMap) -> Result<usize, GraphError> {
    match top(q)? {
        None => Ok(DEFAULT_TOP),
        Some(n) if (1..=MAX_TOP).contains(&n) => Ok(n),
        Some(n) => Err(GraphError::bad_request(
            "Request_UnsupportedQuery",
            format!("Invalid page size specified: '{n}'. Must be between 1 and 999 inclusive."),
        )),
    }
}

/// The page a request asks for: from its `$skiptoken`, else from `$top`/`$select`.
fn page_request(q: &QueryMap, allowed: &[&str]) -> Result<Page, GraphError> {
    if let Some(token) = param(q, "skiptoken") {
        return decode_token(token).ok_or_else(|| GraphError::bad_request("Request_BadRequest",
            "The specified page token value has expired and can no longer be included in your request."));
    }
    reject_unsupported(q)?;
    Ok(Page {
        o: 0,
        n: page_size(q)?,
        sel: select(q, allowed, "user", false)?,
    })
}

/// Active users among `indices[page.o..]`, at most `page.n`, and the position to continue
/// from when any active user remains after them.
fn collect(data: &TenantData, indices: &[u32], page: &Page) -> (Vec<Value>, Option<usize>) {
    let mut out = Vec::with_capacity(page.n.min(indices.len()));
    let mut pos = page.o.min(indices.len());
    while pos < indices.len() && out.len() < page.n {
        let record = &data.users[indices[pos] as usize];
        if record.life == Life::Active {
            out.push(user_json(&record.user, page.sel.as_deref()));
        }
        pos += 1;
    }
    let more = indices[pos..]
        .iter()
        .any(|&i| data.users[i as usize].life == Life::Active);
    (out, more.then_some(pos))
}

fn paged(
    emu: &Emulator,
    path: &str,
    entity: &str,
    page: Page,
    value: Vec<Value>,
    next: Option<usize>,
) -> Response {
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context(emu, entity, page.sel.as_deref())),
    );
    if let Some(o) = next {
        let next = Page { o, ..page };
        let link = format!(
            "{}/v1.0/{path}?$skiptoken={}",
            emu.inner.base(),
            encode_token(&next)
        );
        body.insert("@odata.nextLink".into(), json!(link));
    }
    body.insert("value".into(), Value::Array(value));
    Json(Value::Object(body)).into_response()
}

pub(crate) async fn list(
    State(emu): State<Emulator>,
    caller: Caller,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    caller.require(Need::Users)?;
    let page = page_request(&q, USER_PROPERTIES)?;
    let data = caller.tenant.read();
    let indices: Vec<u32> = (0..data.users.len() as u32).collect();
    let (value, next) = collect(&data, &indices, &page);
    drop(data);
    Ok(paged(&emu, "users", "users", page, value, next))
}

fn not_found(key: &str) -> GraphError {
    GraphError::not_found(
        "Request_ResourceNotFound",
        format!(
            "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

pub(crate) async fn get(
    State(emu): State<Emulator>,
    caller: Caller,
    Path(key): Path<String>,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    caller.require(Need::Users)?;
    one(&emu, &caller, &key, &q)
}

fn one(emu: &Emulator, caller: &Caller, key: &str, q: &QueryMap) -> Result<Response, GraphError> {
    let sel = select(q, USER_PROPERTIES, "user", false)?;
    let data = caller.tenant.read();
    let (_, record) = data.active(key).ok_or_else(|| not_found(key))?;
    let Value::Object(mut body) = user_json(&record.user, sel.as_deref()) else {
        unreachable!()
    };
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/$entity", context(emu, "users", sel.as_deref()))),
    );
    Ok(Json(Value::Object(body)).into_response())
}

/// `/me` is for delegated tokens only, as in Graph.
pub(crate) async fn me(
    State(emu): State<Emulator>,
    caller: Caller,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    let Some(oid) = caller.user_oid.clone() else {
        return Err(GraphError::bad_request(
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        ));
    };
    one(&emu, &caller, &oid, &q)
}

fn removed(record: &super::state::UserRecord) -> Value {
    let reason = if record.life == Life::SoftDeleted {
        "changed"
    } else {
        "deleted"
    };
    json!({"@odata.type": "#microsoft.graph.user", "id": record.user.id, "@removed": {"reason": reason}})
}

pub(crate) async fn delta(
    State(emu): State<Emulator>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    caller.require(Need::Users)?;
    let data = caller.tenant.read();
    let size = max_page_size(&headers)
        .or(top(&q)?)
        .unwrap_or(DEFAULT_TOP)
        .clamp(1, MAX_TOP);
    let fresh = DeltaState {
        t: caller.tenant.idx,
        m: None,
        g: data.generation,
        k: 0,
        s: 0,
        u: data.seq,
        o: 0,
        n: size,
        sel: if param(&q, "deltatoken").is_none() && param(&q, "skiptoken").is_none() {
            select(&q, USER_PROPERTIES, "user", false)?
        } else {
            None
        },
    };
    let state = delta_state(&q, fresh, data.generation, data.seq)?;
    let (value, next) = delta_page(&data, &state);
    drop(data);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context(&emu, "users", state.sel.as_deref())),
    );
    let (name, link) = delta_link(&emu, "users/delta", &state, next);
    body.insert(name.into(), json!(link));
    body.insert("value".into(), Value::Array(value));
    Ok(Json(Value::Object(body)).into_response())
}

fn delta_page(data: &TenantData, state: &DeltaState) -> (Vec<Value>, Option<usize>) {
    let page = Page {
        o: state.o,
        n: state.n,
        sel: state.sel.clone(),
    };
    if state.k == 0 {
        let all: Vec<u32> = (0..data.users.len() as u32).collect();
        return collect(data, &all, &page);
    }
    let changed = data.changed_users(state.s, state.u);
    let end = (state.o + state.n).min(changed.len());
    let value = changed[state.o.min(end)..end]
        .iter()
        .map(|&i| &data.users[i as usize])
        .map(|r| {
            if r.life == Life::Active {
                user_json(&r.user, state.sel.as_deref())
            } else {
                removed(r)
            }
        })
        .collect();
    (value, (end < changed.len()).then_some(end))
}

fn group_json(g: &GroupRecord) -> Value {
    json!({"id": g.id, "displayName": g.display_name, "mailNickname": g.mail_nickname,
        "groupTypes": [], "mailEnabled": false, "securityEnabled": true})
}

pub(crate) async fn groups(
    State(emu): State<Emulator>,
    caller: Caller,
) -> Result<Response, GraphError> {
    caller.require(Need::Groups)?;
    let value: Vec<Value> = caller.tenant.read().groups.iter().map(group_json).collect();
    Ok(
        Json(json!({"@odata.context": context(&emu, "groups", None), "value": value}))
            .into_response(),
    )
}

/// Every user reachable from group `root`, each once, in directory order.
fn transitive_users(data: &TenantData, root: usize) -> Vec<u32> {
    let (mut users, mut seen, mut stack) = (BTreeSet::new(), BTreeSet::new(), vec![root]);
    while let Some(g) = stack.pop() {
        if !seen.insert(g) {
            continue;
        }
        for member in &data.groups[g].members {
            match *member {
                Member::User(u) => {
                    users.insert(u);
                }
                Member::Group(child) => stack.push(child as usize),
            }
        }
    }
    users.into_iter().collect()
}

pub(crate) async fn transitive_members(
    State(emu): State<Emulator>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    caller.require(Need::Groups)?;
    let page = page_request(&q, USER_PROPERTIES)?;
    let data = caller.tenant.read();
    let root = data
        .groups
        .iter()
        .position(|g| g.id.eq_ignore_ascii_case(&id))
        .ok_or_else(|| not_found(&id))?;
    let members = transitive_users(&data, root);
    let (value, next) = collect(&data, &members, &page);
    drop(data);
    let path = format!("groups/{id}/transitiveMembers/microsoft.graph.user");
    Ok(paged(&emu, &path, "users", page, value, next))
}
