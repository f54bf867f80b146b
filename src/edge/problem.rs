//! Error responses of the gateway's own making, mapped to status codes in one place.
//! Browsers get a small HTML page; API clients (`Accept: application/json`, XHR) get JSON in
//! PortSIP's error shape `{"errors":[{"code","message"}]}` so existing clients can show it.

use axum::body::Body;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

/// Everything the HTTP layer itself can answer with an error.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the PBX did not accept the connection")]
    UpstreamUnavailable,
    #[error("the PBX did not answer in time")]
    UpstreamTimeout,
    #[error("the PBX answered with something that is not valid HTTP")]
    UpstreamProtocol,
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    /// The client sent its request body too slowly (`[server] body_min_rate`).
    #[error("the request body arrived too slowly")]
    SlowRequest,
    /// Every connection slot is taken (`[server] max_connections`).
    #[error("too many open connections; try again shortly")]
    Busy,
    #[error("the request body is larger than the {limit} bytes allowed")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    #[error("too many requests from this address; try again later")]
    RateLimited,
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::UpstreamUnavailable | HttpError::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            HttpError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::SlowRequest => StatusCode::REQUEST_TIMEOUT,
            HttpError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            HttpError::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            HttpError::UpstreamProtocol => "UPSTREAM_PROTOCOL_ERROR",
            HttpError::BadRequest(_) => "BAD_REQUEST",
            HttpError::NotFound => "NOT_FOUND",
            HttpError::SlowRequest => "REQUEST_TIMEOUT",
            HttpError::Busy => "BUSY",
            HttpError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            HttpError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            HttpError::RateLimited => "RATE_LIMITED",
        }
    }

    /// Renders for the client that sent `request_headers`.
    pub fn to_response(&self, request_headers: &HeaderMap) -> Response<Body> {
        render(
            self.status(),
            self.code(),
            &self.to_string(),
            request_headers,
        )
    }
}

/// True when the client asked for JSON rather than a page.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let xhr = headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"));
    xhr || (accept.contains("json") && !accept.contains("text/html"))
}

/// An error answer with `status`, as JSON or HTML depending on the request.
pub fn render(
    status: StatusCode,
    code: &str,
    message: &str,
    request_headers: &HeaderMap,
) -> Response<Body> {
    let (content_type, body) = if wants_json(request_headers) {
        let json = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
        ("application/json", json.to_string())
    } else {
        ("text/html; charset=utf-8", html_page(status, message))
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn html_page(status: StatusCode, message: &str) -> String {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:36rem;\
         margin:4rem auto;padding:0 1rem;color:#222}}h1{{font-size:1.4rem}}</style></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        escape_html(message)
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_or_html_by_accept() {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let r = HttpError::UpstreamTimeout.to_response(&h);
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        h.insert(
            ACCEPT,
            HeaderValue::from_static("text/html,application/json;q=0.9"),
        );
        let r = HttpError::UpstreamUnavailable.to_response(&h);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert!(
            r.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape_html("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
