//! `POST /ms365/notifications` and `POST /ms365/notifications/lifecycle`: Graph's
//! validation handshake (a `validationToken` query answered 200 `text/plain` with the
//! token, well inside Graph's 10-second limit) and the notifications themselves, answered
//! 202 as soon as the body is read and parsed; verifying and acting on them happens after
//! the answer, in the intake task. Before any of that: a per-address rate limit, JSON only,
//! a capped body. What is refused is counted in `graph_notifications{outcome}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::routing::post;
use http::header::{CONTENT_TYPE, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tokio::sync::mpsc::error::TrySendError;

use super::Realtime;
use super::intake::{Batch, Channel, count};
use super::wire::{self, MAX_BODY};
use crate::edge::conn::ConnInfo;
use crate::edge::problem::{HttpError, render};
use crate::sso::ratelimit::client_key;

pub fn routes(rt: Arc<Realtime>) -> Router {
    Router::new()
        .route("/ms365/notifications", post(changes))
        .route("/ms365/notifications/lifecycle", post(lifecycle))
        .with_state(rt)
}

async fn changes(State(rt): State<Arc<Realtime>>, req: Request) -> Response<Body> {
    receive(&rt, Channel::Changes, req).await
}

async fn lifecycle(State(rt): State<Arc<Realtime>>, req: Request) -> Response<Body> {
    receive(&rt, Channel::Lifecycle, req).await
}

async fn receive(rt: &Realtime, channel: Channel, req: Request) -> Response<Body> {
    if let Some(conn) = req.extensions().get::<ConnInfo>()
        && let Err(wait) = rt.limiter.check(client_key(conn.peer.ip()))
    {
        count(&rt.metrics, "rate_limited");
        let mut response = problem(&HttpError::RateLimited);
        let secs = HeaderValue::from(wait.as_secs().max(1));
        response.headers_mut().insert(RETRY_AFTER, secs);
        return response;
    }
    if let Some(token) = validation_token(&req) {
        return handshake(&token);
    }
    if !is_json(req.headers()) {
        count(&rt.metrics, "malformed");
        return problem(&HttpError::UnsupportedMediaType(
            "notifications are JSON (Content-Type: application/json)",
        ));
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            count(&rt.metrics, "too_large");
            return problem(&HttpError::PayloadTooLarge { limit: MAX_BODY });
        }
    };
    let items = match wire::parse(&body) {
        Ok(items) => items,
        Err(e) => {
            count(&rt.metrics, "malformed");
            return problem(&HttpError::BadRequest(e.to_string()));
        }
    };
    match rt.intake.try_send(Batch { channel, items }) {
        Ok(()) => status_only(StatusCode::ACCEPTED),
        Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
            // Graph retries a delivery that was not accepted.
            count(&rt.metrics, "overloaded");
            let mut response = problem(&HttpError::Busy);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

fn validation_token(req: &Request) -> Option<String> {
    let Query(query) = Query::<HashMap<String, String>>::try_from_uri(req.uri()).ok()?;
    query.get("validationToken").cloned()
}

/// The validation handshake: the token itself, as plain text.
fn handshake(token: &str) -> Response<Body> {
    if !wire::valid_token(token) {
        return problem(&HttpError::BadRequest(
            "validationToken must be 1 to 4096 printable characters".into(),
        ));
    }
    let mut response = Response::new(Body::from(token.to_string()));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Graph is an API client: errors are JSON.
fn problem(e: &HttpError) -> Response<Body> {
    let mut accept = HeaderMap::new();
    accept.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    render(e.status(), e.code(), &e.to_string(), &accept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_echoes_the_token_as_plain_text() {
        let response = handshake("Validation: Testing client application reachability");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(handshake("<b>").status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn only_json_bodies_are_read() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }
}
