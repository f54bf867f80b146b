//! Company contacts: `GET/POST /contacts`, `GET/POST /contacts/{id}`, `POST
//! /contacts/{id}/destroy`, for the tenant administrator. Contacts are stored as sent; a
//! contact needs a non-empty `name` (PortSIP's form requires one; the schema only bounds
//! its length). Personal contacts (`/user/contacts`) are not served.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::state::{Inner, as_map};
use super::tenant::StoredContact;
use super::wire::{Answer, Fail, Op, admin, in_tenant, json_body, page, paging, rule};

const LIST: Op = Op::get("/contacts");
const CREATE: Op = Op::post("/contacts");
const UPDATE: Op = Op::post("/contacts/{id}");
const DESTROY: Op = Op::post("/contacts/{id}/destroy");

type Emu = State<Arc<Inner>>;

/// `GET /contacts?top&skip`, in creation order.
pub(crate) async fn list(
    State(emu): Emu,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Answer {
    let c = admin(&emu, &headers)?;
    let (top, skip) = paging(&emu, LIST, &query)?;
    let listing = in_tenant(&emu, &c, |t| {
        Ok((t.contact_count(), t.contacts_page(skip, top)))
    })?;
    Ok(page(listing))
}

/// `POST /contacts` → 201 `{id}`.
pub(crate) async fn create(State(emu): Emu, headers: HeaderMap, bytes: Bytes) -> Answer {
    let c = admin(&emu, &headers)?;
    let v = json_body(&emu, CREATE, &bytes)?;
    let named = v
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.trim().is_empty());
    rule(&emu, CREATE, "name", (!named).then_some("is required"))?;
    let id = emu.new_id();
    let contact = StoredContact {
        seq: emu.next_seq(),
        fields: as_map(v),
    };
    in_tenant(&emu, &c, |t| {
        t.add_contact(id.clone(), contact);
        Ok(())
    })?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}

/// `GET /contacts/{id}`.
pub(crate) async fn get(State(emu): Emu, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let c = admin(&emu, &headers)?;
    let contact = in_tenant(&emu, &c, |t| {
        (t.contact(&id))
            .map(|contact| contact.view(&id))
            .ok_or_else(|| Fail::not_found("contact"))
    })?;
    Ok(Json(contact).into_response())
}

/// `POST /contacts/{id}`: the fields present are changed (`""` clears one).
pub(crate) async fn update(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let c = admin(&emu, &headers)?;
    let v = json_body(&emu, UPDATE, &bytes)?;
    in_tenant(&emu, &c, |t| {
        let contact = t
            .contact_mut(&id)
            .ok_or_else(|| Fail::not_found("contact"))?;
        contact.fields.extend(as_map(v));
        Ok(())
    })?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /contacts/{id}/destroy` → 204.
pub(crate) async fn destroy(
    State(emu): Emu,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let c = admin(&emu, &headers)?;
    json_body(&emu, DESTROY, &bytes)?;
    in_tenant(&emu, &c, |t| {
        (t.remove_contact(&id))
            .then_some(())
            .ok_or_else(|| Fail::not_found("contact"))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
