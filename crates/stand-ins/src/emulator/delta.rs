//! Opaque state tokens of paging and delta queries. A token is base64url JSON: for `/users`
//! paging the position and page size; for delta rounds the tenant (and mailbox), the
//! tenant's generation (so "expire delta tokens" can answer 410 `syncStateNotFound`), and
//! the change-log window `(since, upto]` the round covers. Query options given on the first
//! request ride along, as Graph encodes them into its links.

use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Emulator;
use super::graph::{GraphError, QueryMap, param};
use super::util::{b64url, b64url_decode};

pub(crate) fn encode_token<T: Serialize>(state: &T) -> String {
    b64url(serde_json::to_string(state).unwrap_or_default().as_bytes())
}

pub(crate) fn decode_token<T: DeserializeOwned>(token: &str) -> Option<T> {
    serde_json::from_slice(&b64url_decode(token)?).ok()
}

/// The state a delta link or a delta page link carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeltaState {
    /// Tenant index, and for contacts the mailbox's user index.
    pub t: u32,
    pub m: Option<u32>,
    /// Tenant generation; an older one answers 410.
    pub g: u32,
    /// 0 initial round, 1 changes round, 2 the next round's starting point.
    pub k: u8,
    /// Changes after `s` up to `u` (sequence numbers).
    pub s: u64,
    pub u: u64,
    /// Position within the round, and the page size.
    pub o: usize,
    pub n: usize,
    pub sel: Option<Vec<String>>,
}

/// Where a delta request stands: a fresh round, a page of one, or the round after a
/// delta link. `fresh` holds the state a request without tokens starts from.
pub(crate) fn delta_state(
    q: &QueryMap,
    fresh: DeltaState,
    generation: u32,
    seq: u64,
) -> Result<DeltaState, GraphError> {
    let token = param(q, "skiptoken").or_else(|| param(q, "deltatoken"));
    let Some(token) = token else { return Ok(fresh) };
    let state: DeltaState = decode_token(token)
        .filter(|s: &DeltaState| s.t == fresh.t && s.m == fresh.m && s.k <= 2)
        .ok_or_else(|| {
            GraphError::bad_request("BadRequest", "Invalid delta token: the token is malformed.")
        })?;
    if state.g != generation {
        return Err(GraphError::new(
            StatusCode::GONE,
            "syncStateNotFound",
            format!(
                "The sync state generation is not found; generation={};[highest={generation}].",
                state.g
            ),
        ));
    }
    Ok(match state.k {
        2 => DeltaState {
            k: 1,
            s: state.u,
            u: seq,
            o: 0,
            ..state
        },
        _ => state,
    })
}

/// `@odata.nextLink` (the round goes on at position `next`) or `@odata.deltaLink` (round
/// complete) for `path`.
pub(crate) fn delta_link(
    emu: &Emulator,
    path: &str,
    state: &DeltaState,
    next: Option<usize>,
) -> (&'static str, String) {
    let base = emu.inner.base();
    if let Some(o) = next {
        let next = DeltaState { o, ..state.clone() };
        (
            "@odata.nextLink",
            format!("{base}/v1.0/{path}?$skiptoken={}", encode_token(&next)),
        )
    } else {
        let done = DeltaState {
            k: 2,
            o: 0,
            ..state.clone()
        };
        (
            "@odata.deltaLink",
            format!("{base}/v1.0/{path}?$deltatoken={}", encode_token(&done)),
        )
    }
}
