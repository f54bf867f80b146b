//! JSON `$batch`: up to 20 requests in one POST, each answered with its own status. Graph
//! throttles items individually, so a batch can come back 200 with some items 429: those
//! items, and only those, are sent again in a later batch after the longest `Retry-After`
//! among them. Items naming a mailbox hold that mailbox's concurrency slots while their
//! batch is in flight, and a chunk never carries more items for one mailbox than the
//! mailbox allows, since Exchange counts batched requests against the same limit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::client::{Call, GraphClient, JSON, MAX_JSON_BODY, decode};
use super::error::GraphError;
use super::resources::{CONTACTS_DELTA_PREFERENCE, is_contacts_delta};
use super::retry::parse_retry_after;

/// Graph's limit of requests per `$batch`.
pub const MAX_BATCH: usize = 20;

/// One request of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRequest {
    /// Unique within one call of [`GraphClient::batch`].
    pub id: String,
    /// `GET`, `POST`, ...
    pub method: String,
    /// Relative to the version, e.g. `/users/{id}/photo`.
    pub url: String,
    /// The mailbox of an Outlook resource (photo, contacts), for the concurrency limit.
    pub mailbox: Option<String>,
}

impl BatchRequest {
    /// A GET of `url` (relative to the version).
    pub fn get(id: impl Into<String>, url: impl Into<String>) -> Self {
        BatchRequest {
            id: id.into(),
            method: "GET".into(),
            url: url.into(),
            mailbox: None,
        }
    }

    /// Counts this request against `mailbox`'s concurrency limit.
    pub fn in_mailbox(mut self, mailbox: impl Into<String>) -> Self {
        self.mailbox = Some(mailbox.into());
        self
    }
}

/// One item's answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchResponse {
    pub id: String,
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON answers as JSON; binary ones (photo `$value`) as a base64 string.
    #[serde(default)]
    pub body: ItemBody,
}

/// An item's body as it came, JSON text parsed only where it is read, straight into the
/// type the reader wants: a contacts page of a thousand contacts is not built as
/// `serde_json::Value`s first.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct ItemBody(Box<RawValue>);

impl ItemBody {
    /// The body as a `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The body as JSON (`null` when it is not), for tests that look at an answer whole.
    #[cfg(test)]
    pub fn json(&self) -> serde_json::Value {
        self.parse().unwrap_or_default()
    }
}

impl Default for ItemBody {
    fn default() -> Self {
        ItemBody::from(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for ItemBody {
    fn from(value: serde_json::Value) -> Self {
        let raw = serde_json::value::to_raw_value(&value).expect("a JSON value serialises");
        ItemBody(raw)
    }
}

impl PartialEq for ItemBody {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for ItemBody {}

/// The part of a Graph error body the client reads.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorCode,
}

#[derive(Deserialize)]
struct ErrorCode {
    code: String,
}

impl BatchResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `error.code` of a failed item (a successful one has none: its body, maybe a
    /// page of a thousand contacts, is not searched for one).
    pub fn error_code(&self) -> Option<String> {
        if self.is_success() {
            return None;
        }
        Some(self.body.parse::<ErrorBody>().ok()?.error.code)
    }

    /// The item's mailbox does not exist for Graph ([`super::error::NO_MAILBOX_CODE`]).
    pub fn is_no_mailbox(&self) -> bool {
        self.status == 404
            && self
                .error_code()
                .is_some_and(|c| c.eq_ignore_ascii_case(super::error::NO_MAILBOX_CODE))
    }

    /// A header of the item, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The item's `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        parse_retry_after(self.header("Retry-After")?, SystemTime::now())
    }

    /// A binary body (Graph base64-encodes non-JSON item bodies).
    pub fn binary_body(&self) -> Option<Vec<u8>> {
        let text: String = self.body.parse().ok()?;
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }

    fn is_throttled(&self) -> bool {
        matches!(self.status, 429 | 503)
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    id: &'a str,
    method: &'a str,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<WireHeaders>,
}

/// An item's own request headers; only contact delta items carry one (their page size).
#[derive(Serialize)]
struct WireHeaders {
    #[serde(rename = "Prefer")]
    prefer: &'static str,
}

#[derive(Deserialize)]
struct WireResponses {
    #[serde(default)]
    responses: Vec<BatchResponse>,
}

impl GraphClient {
    /// Sends `requests` in batches of at most 20 and returns every item's final answer in
    /// input order. Throttled items are retried up to `max_retries` times; after that
    /// their 429/503 answer is what comes back.
    pub async fn batch(
        &self,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<BatchResponse>, GraphError> {
        validate(&requests)?;
        let mut answers: HashMap<String, BatchResponse> = HashMap::with_capacity(requests.len());
        for chunk in plan_chunks(&requests, self.mailboxes().per_mailbox()) {
            for answer in self.run_chunk(chunk).await? {
                answers.insert(answer.id.clone(), answer);
            }
        }
        requests
            .iter()
            .map(|r| {
                answers.remove(&r.id).ok_or_else(|| {
                    GraphError::Decode(format!("no answer for batch item `{}`", r.id))
                })
            })
            .collect()
    }

    /// One chunk and the rounds that re-send its throttled items.
    async fn run_chunk(&self, chunk: Vec<&BatchRequest>) -> Result<Vec<BatchResponse>, GraphError> {
        let mut pending = chunk;
        let mut done = Vec::with_capacity(pending.len());
        for round in 0.. {
            let answers = self.send_batch(&pending).await?;
            let (throttled, finished): (Vec<_>, Vec<_>) =
                answers.into_iter().partition(BatchResponse::is_throttled);
            done.extend(finished);
            self.counters().throttled(throttled.len() as u64);
            if throttled.is_empty() || round >= self.options().max_retries {
                done.extend(throttled);
                break;
            }
            let wait = throttled
                .iter()
                .filter_map(BatchResponse::retry_after)
                .max();
            let wait = wait.unwrap_or_else(|| self.backoff(round));
            tracing::debug!(
                items = throttled.len(),
                ?wait,
                "re-sending throttled batch items"
            );
            let ids: HashSet<&str> = throttled.iter().map(|a| a.id.as_str()).collect();
            pending.retain(|r| ids.contains(r.id.as_str()));
            self.counters().retried();
            self.counters().wait(wait).await;
        }
        Ok(done)
    }

    /// One POST of `items`, holding their mailboxes' slots meanwhile.
    async fn send_batch(&self, items: &[&BatchRequest]) -> Result<Vec<BatchResponse>, GraphError> {
        let mut per_mailbox: BTreeMap<String, usize> = BTreeMap::new();
        for mailbox in items.iter().filter_map(|r| r.mailbox.as_ref()) {
            *per_mailbox.entry(mailbox.clone()).or_default() += 1;
        }
        let _slots = self.mailboxes().acquire_all(&per_mailbox).await;
        let wire: Vec<WireRequest<'_>> = items
            .iter()
            .map(|r| WireRequest {
                id: &r.id,
                method: &r.method,
                url: &r.url,
                headers: is_contacts_delta(&r.url).then_some(WireHeaders {
                    prefer: CONTACTS_DELTA_PREFERENCE,
                }),
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "requests": wire }))
            .map_err(|e| GraphError::InvalidRequest(e.to_string()))?;
        let url = format!("{}/$batch", self.graph_base());
        let call = Call {
            method: Method::POST,
            url: &url,
            kind: "batch",
            body: Some(body.into()),
            accept: JSON,
            max_body: MAX_JSON_BODY,
            // Re-sending after a lost connection is only safe when every item is a read.
            idempotent: items.iter().all(|r| r.method.eq_ignore_ascii_case("GET")),
        };
        let reply = self.execute(&call).await?;
        Ok(decode::<WireResponses>(&reply.body)?.responses)
    }
}

fn validate(requests: &[BatchRequest]) -> Result<(), GraphError> {
    let mut seen = HashSet::with_capacity(requests.len());
    for r in requests {
        if !seen.insert(r.id.as_str()) {
            return Err(GraphError::InvalidRequest(format!(
                "batch item id `{}` is used twice",
                r.id
            )));
        }
        if r.url.contains("://") {
            return Err(GraphError::InvalidRequest(format!(
                "batch item `{}` must use a URL relative to the version, not {}",
                r.id, r.url
            )));
        }
    }
    Ok(())
}

/// Splits into chunks of at most 20 with at most `per_mailbox` items of any one mailbox,
/// filling earlier chunks first.
fn plan_chunks(requests: &[BatchRequest], per_mailbox: usize) -> Vec<Vec<&BatchRequest>> {
    let per_mailbox = per_mailbox.max(1);
    let mut chunks: Vec<Vec<&BatchRequest>> = Vec::new();
    let mut counts: Vec<HashMap<&str, usize>> = Vec::new();
    // Chunks before these indexes are known full (overall, or for that mailbox).
    let mut first_open = 0;
    let mut mailbox_cursor: HashMap<&str, usize> = HashMap::new();
    for request in requests {
        let mailbox = request.mailbox.as_deref();
        let mut i = first_open.max(
            mailbox
                .and_then(|m| mailbox_cursor.get(m).copied())
                .unwrap_or(0),
        );
        let fits = |i: usize, counts: &[HashMap<&str, usize>], chunks: &[Vec<&BatchRequest>]| {
            chunks[i].len() < MAX_BATCH
                && mailbox.is_none_or(|m| counts[i].get(m).copied().unwrap_or(0) < per_mailbox)
        };
        while i < chunks.len() && !fits(i, &counts, &chunks) {
            i += 1;
        }
        if i == chunks.len() {
            chunks.push(Vec::new());
            counts.push(HashMap::new());
        }
        chunks[i].push(request);
        if let Some(m) = mailbox {
            *counts[i].entry(m).or_default() += 1;
            mailbox_cursor.insert(m, i);
        }
        while first_open < chunks.len() && chunks[first_open].len() >= MAX_BATCH {
            first_open += 1;
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: usize, mailbox: Option<&str>) -> BatchRequest {
        let r = BatchRequest::get(id.to_string(), format!("/users/{id}/photo"));
        match mailbox {
            Some(m) => r.in_mailbox(m),
            None => r,
        }
    }

    #[test]
    fn chunks_hold_at_most_twenty() {
        let requests: Vec<_> = (0..45).map(|i| req(i, None)).collect();
        let chunks = plan_chunks(&requests, 4);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [20, 20, 5]);
        let ids: Vec<&str> = chunks.iter().flatten().map(|r| r.id.as_str()).collect();
        let expected: Vec<String> = (0..45).map(|i| i.to_string()).collect();
        assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn chunks_respect_the_mailbox_limit() {
        let mut requests: Vec<_> = (0..10).map(|i| req(i, Some("a"))).collect();
        requests.extend((10..30).map(|i| req(i, None)));
        requests.extend((30..33).map(|i| req(i, Some("b"))));
        let chunks = plan_chunks(&requests, 4);
        for chunk in &chunks {
            assert!(chunk.len() <= MAX_BATCH);
            for m in ["a", "b"] {
                let n = chunk
                    .iter()
                    .filter(|r| r.mailbox.as_deref() == Some(m))
                    .count();
                assert!(n <= 4, "{n} items of {m} in one chunk");
            }
        }
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 33);
        assert_eq!(
            chunks.len(),
            3,
            "a needs three chunks; the rest fills the gaps"
        );
    }

    #[test]
    fn invalid_batches_are_refused() {
        let dup = vec![req(1, None), req(1, None)];
        assert!(matches!(validate(&dup), Err(GraphError::InvalidRequest(_))));
        let absolute = vec![BatchRequest::get("1", "https://evil.example/v1.0/users")];
        assert!(matches!(
            validate(&absolute),
            Err(GraphError::InvalidRequest(_))
        ));
    }

    #[test]
    fn item_helpers() {
        let json = r#"{"id":"1","status":429,"headers":{"retry-after":"0.5","Content-Type":"application/json"},"body":"aGk="}"#;
        let r: BatchResponse = serde_json::from_str(json).unwrap();
        assert_eq!(r.retry_after(), Some(Duration::from_millis(500)));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.binary_body().unwrap(), b"hi");
        assert!(r.is_throttled() && !r.is_success());
    }
}
