//! Outlook resources on Graph v1.0: a user's profile photo (metadata and `$value`), the
//! default Contacts folder (`/contacts`, `/contactFolders/{id}/contacts`, one contact), and
//! contacts delta on both the documented folder path and the `/contacts/delta` shortcut.
//! Contacts come from the seed plus the mailbox's overlay, paged by index.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Emulator;
use super::delta::{DeltaState, delta_link, delta_state};
use super::graph::{
    Caller, GraphError, Need, QueryMap, context, max_page_size, param, project, reject_unsupported,
    select, top,
};
use super::model::{CONTACT_PROPERTIES, Contact};
use super::seed;
use super::state::{Photo, TenantData};

const CONTACTS_DEFAULT_TOP: usize = 10;
const CONTACTS_MAX_TOP: usize = 1000;

fn image_not_found() -> GraphError {
    GraphError::not_found(
        "ImageNotFound",
        "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was thrown.",
    )
}

fn user_not_found(key: &str) -> GraphError {
    GraphError::not_found(
        "Request_ResourceNotFound",
        format!(
            "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// The user's photo bytes and their ETag, if it has a photo.
fn photo_of(caller: &Caller, key: &str) -> Result<(String, Vec<u8>), GraphError> {
    let data = caller.tenant.read();
    let (_, record) = data.active(key).ok_or_else(|| user_not_found(key))?;
    let bytes = match &record.photo {
        Photo::None => return Err(image_not_found()),
        Photo::Generated(version) => seed::jpeg(&format!("{}:{version}", record.user.id)),
        Photo::Custom(bytes) => bytes.as_ref().clone(),
    };
    Ok((record.user.id.clone(), bytes))
}

pub(crate) async fn photo(
    State(emu): State<Emulator>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, GraphError> {
    caller.require(Need::Photos)?;
    let (id, bytes) = photo_of(&caller, &key)?;
    Ok(Json(json!({
        "@odata.context": format!("{}/v1.0/$metadata#users('{id}')/photo/$entity", emu.inner.base()),
        "@odata.mediaContentType": "image/jpeg",
        "@odata.mediaEtag": format!("\"{}\"", seed::photo_etag(&bytes)),
        "id": "240X240",
        "width": 240,
        "height": 240,
    }))
    .into_response())
}

pub(crate) async fn photo_value(
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, GraphError> {
    caller.require(Need::Photos)?;
    let (_, bytes) = photo_of(&caller, &key)?;
    let etag = format!("\"{}\"", seed::photo_etag(&bytes));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "image/jpeg".to_string()),
            (header::ETAG, etag),
        ],
        bytes,
    )
        .into_response())
}

/// The mailbox a contacts route targets: `(tenant index, user index)`.
fn mailbox(caller: &Caller, key: &str) -> Result<u32, GraphError> {
    let data = caller.tenant.read();
    let (idx, record) = data.active(key).ok_or_else(|| {
        GraphError::not_found(
            "ErrorInvalidUser",
            format!("The requested user '{key}' is invalid."),
        )
    })?;
    if !record.mailbox {
        return Err(GraphError::not_found(
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ));
    }
    Ok(idx)
}

fn check_folder(
    emu: &Emulator,
    caller: &Caller,
    user: u32,
    folder: &str,
) -> Result<(), GraphError> {
    let default = seed::folder_id(emu.inner.seed, caller.tenant.idx, user);
    if folder.eq_ignore_ascii_case("contacts") || folder == default {
        return Ok(());
    }
    Err(GraphError::not_found(
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    ))
}

fn contact_json(contact: &Contact, sel: Option<&[String]>) -> Value {
    project(
        serde_json::to_value(contact).unwrap_or(Value::Null),
        sel,
        None,
    )
}

/// Contacts of `user` from index `from`, at most `n`, and the index to continue from when
/// more exist. Only the page is generated.
fn contacts_from(
    emu: &Emulator,
    data: &TenantData,
    t: u32,
    user: u32,
    from: usize,
    n: usize,
) -> (Vec<Contact>, Option<usize>) {
    let total = data.contact_total(user);
    let (mut out, mut c) = (Vec::new(), from.min(total as usize) as u32);
    while c < total && out.len() < n {
        if let Some(contact) = data.contact(emu.inner.seed, t, user, c) {
            out.push(contact);
        }
        c += 1;
    }
    let more = (c..total).any(|i| data.contact_exists(user, i));
    (out, more.then_some(c as usize))
}

/// The index of the `skip`-th existing contact (`$skip` counts contacts, not indices).
fn nth_index(data: &TenantData, user: u32, skip: usize) -> usize {
    let total = data.contact_total(user);
    let mut seen = 0;
    for c in 0..total {
        if data.contact_exists(user, c) {
            if seen == skip {
                return c as usize;
            }
            seen += 1;
        }
    }
    total as usize
}

pub(crate) async fn contacts(
    State(emu): State<Emulator>,
    caller: Caller,
    Path(key): Path<String>,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    list_contacts(&emu, &caller, &key, None, &q)
}

pub(crate) async fn folder_contacts(
    State(emu): State<Emulator>,
    caller: Caller,
    Path((key, folder)): Path<(String, String)>,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    list_contacts(&emu, &caller, &key, Some(&folder), &q)
}

fn list_contacts(
    emu: &Emulator,
    caller: &Caller,
    key: &str,
    folder: Option<&str>,
    q: &QueryMap,
) -> Result<Response, GraphError> {
    caller.require(Need::Contacts)?;
    reject_unsupported(q)?;
    let user = mailbox(caller, key)?;
    if let Some(folder) = folder {
        check_folder(emu, caller, user, folder)?;
    }
    let sel = select(q, CONTACT_PROPERTIES, "contact", true)?;
    // Outlook caps a page at 1000 items rather than failing.
    let n = top(q)?
        .unwrap_or(CONTACTS_DEFAULT_TOP)
        .clamp(1, CONTACTS_MAX_TOP);
    let skip: usize = param(q, "skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let (page, more) = {
        let data = caller.tenant.read();
        let from = nth_index(&data, user, skip);
        contacts_from(emu, &data, caller.tenant.idx, user, from, n)
    };
    let mut body = Map::new();
    let entity = format!("users('{key}')/contacts");
    body.insert(
        "@odata.context".into(),
        json!(context(emu, &entity, sel.as_deref())),
    );
    let value = page
        .iter()
        .map(|c| contact_json(c, sel.as_deref()))
        .collect();
    body.insert("value".into(), Value::Array(value));
    if more.is_some() {
        let link = contacts_next_link(emu, key, folder, n, skip + n, sel.as_deref());
        body.insert("@odata.nextLink".into(), json!(link));
    }
    Ok(Json(Value::Object(body)).into_response())
}

/// Outlook pages contacts with `$skip` (a count of contacts), keeping `$top`/`$select`.
fn contacts_next_link(
    emu: &Emulator,
    key: &str,
    folder: Option<&str>,
    n: usize,
    skip: usize,
    sel: Option<&[String]>,
) -> String {
    let path = match folder {
        Some(f) => format!("users/{key}/contactFolders/{f}/contacts"),
        None => format!("users/{key}/contacts"),
    };
    let mut link = format!("{}/v1.0/{path}?$top={n}&$skip={skip}", emu.inner.base());
    if let Some(sel) = sel {
        link.push_str(&format!("&$select={}", sel.join(",")));
    }
    link
}

pub(crate) async fn contact(
    State(emu): State<Emulator>,
    caller: Caller,
    Path((key, id)): Path<(String, String)>,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    caller.require(Need::Contacts)?;
    let user = mailbox(&caller, &key)?;
    let sel = select(&q, CONTACT_PROPERTIES, "contact", true)?;
    let missing = || {
        GraphError::not_found(
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    };
    let (t, u, c) = seed::parse_contact_id(emu.inner.seed, &id).ok_or_else(missing)?;
    if t != caller.tenant.idx || u != user {
        return Err(missing());
    }
    let found = caller
        .tenant
        .read()
        .contact(emu.inner.seed, t, u, c)
        .ok_or_else(missing)?;
    Ok(Json(contact_json(&found, sel.as_deref())).into_response())
}

/// `GET /users/{id}/contactFolders/{id}`: the default folder (also as `contacts`).
pub(crate) async fn folder(
    State(emu): State<Emulator>,
    caller: Caller,
    Path((key, folder)): Path<(String, String)>,
) -> Result<Response, GraphError> {
    caller.require(Need::Contacts)?;
    let user = mailbox(&caller, &key)?;
    check_folder(&emu, &caller, user, &folder)?;
    let id = seed::folder_id(emu.inner.seed, caller.tenant.idx, user);
    Ok(
        Json(json!({"id": id, "displayName": "Contacts", "parentFolderId": format!("{id}AAA=")}))
            .into_response(),
    )
}

/// `GET /users/{id}/contactFolders`: child folders of Contacts; the emulator has none.
pub(crate) async fn folders(
    State(emu): State<Emulator>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, GraphError> {
    caller.require(Need::Contacts)?;
    mailbox(&caller, &key)?;
    Ok(Json(json!({"@odata.context": context(&emu, &format!("users('{key}')/contactFolders"), None), "value": []})).into_response())
}

pub(crate) async fn delta(
    State(emu): State<Emulator>,
    caller: Caller,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    let path = format!("users/{key}/contacts/delta");
    contacts_delta(&emu, &caller, &key, &path, &headers, &q)
}

pub(crate) async fn folder_delta(
    State(emu): State<Emulator>,
    caller: Caller,
    headers: HeaderMap,
    Path((key, folder)): Path<(String, String)>,
    Query(q): Query<QueryMap>,
) -> Result<Response, GraphError> {
    caller.require(Need::Contacts)?;
    let user = mailbox(&caller, &key)?;
    check_folder(&emu, &caller, user, &folder)?;
    let path = format!("users/{key}/contactFolders/{folder}/contacts/delta");
    contacts_delta(&emu, &caller, &key, &path, &headers, &q)
}

fn contacts_delta(
    emu: &Emulator,
    caller: &Caller,
    key: &str,
    path: &str,
    headers: &HeaderMap,
    q: &QueryMap,
) -> Result<Response, GraphError> {
    caller.require(Need::Contacts)?;
    let user = mailbox(caller, key)?;
    let data = caller.tenant.read();
    let n = max_page_size(headers)
        .or(top(q)?)
        .unwrap_or(CONTACTS_DEFAULT_TOP)
        .clamp(1, CONTACTS_MAX_TOP);
    let fresh = DeltaState {
        t: caller.tenant.idx,
        m: Some(user),
        g: data.generation,
        k: 0,
        s: 0,
        u: data.seq,
        o: 0,
        n,
        sel: select(q, CONTACT_PROPERTIES, "contact", true)?,
    };
    let state = delta_state(q, fresh, data.generation, data.seq)?;
    let (value, next) = contacts_delta_page(emu, &data, caller.tenant.idx, user, &state);
    drop(data);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context(
            emu,
            &format!("users('{key}')/contacts"),
            state.sel.as_deref()
        )),
    );
    let (name, link) = delta_link(emu, path, &state, next);
    body.insert(name.into(), json!(link));
    body.insert("value".into(), Value::Array(value));
    Ok(Json(Value::Object(body)).into_response())
}

fn contacts_delta_page(
    emu: &Emulator,
    data: &TenantData,
    t: u32,
    user: u32,
    state: &DeltaState,
) -> (Vec<Value>, Option<usize>) {
    let sel = state.sel.as_deref();
    if state.k == 0 {
        let (page, next) = contacts_from(emu, data, t, user, state.o, state.n);
        return (page.iter().map(|c| contact_json(c, sel)).collect(), next);
    }
    let changed = data.changed_contacts(user, state.s, state.u);
    let end = (state.o + state.n).min(changed.len());
    let value = changed[state.o.min(end)..end]
        .iter()
        .map(|&c| match data.contact(emu.inner.seed, t, user, c) {
            Some(contact) => contact_json(&contact, sel),
            None => json!({"@odata.type": "#microsoft.graph.contact",
                "id": seed::contact_id(emu.inner.seed, t, user, c), "@removed": {"reason": "deleted"}}),
        })
        .collect();
    (value, (end < changed.len()).then_some(end))
}
