//! The pages a user sees when sign-in cannot go on: what happened, what to do, and a way to
//! try again. API clients (`Accept: application/json`, XHR) get the same as JSON. Microsoft's
//! errors carry their AADSTS code and the plain-language hint.

use axum::body::Body;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::edge::problem::{escape_html, wants_json};
use crate::entra::error::hint_for;
use crate::web::assets::{set_page_security_headers, shared_stylesheet_url};

/// A sign-in problem to show.
#[derive(Debug, Clone)]
pub struct SignInProblem {
    pub status: StatusCode,
    /// Machine-readable code (`TENANT_NOT_FOUND`, `AADSTS50011`, ...).
    pub code: String,
    pub title: &'static str,
    pub message: String,
    /// What the user (or their administrator) can do.
    pub hint: Option<String>,
    /// Where "Try again" leads (boxed: keeps the problem small enough to return by value).
    pub retry: Option<Box<str>>,
    /// Seconds for a `Retry-After` header (rate limiting).
    pub retry_after: Option<u32>,
    /// The tenant the sign-in was for, once known (for the failure metric).
    pub tenant: Option<String>,
}

/// What a sign-in step's answer carries for the sign-in metrics (a response extension the
/// sign-in middleware reads; never sent to the client).
#[derive(Debug, Clone)]
pub enum SignInEvent {
    /// Sent to Microsoft.
    Started { tenant: String },
    /// A session was issued, `seconds` after the start.
    Completed { tenant: String, seconds: f64 },
    /// Refused with this problem code.
    Failed {
        tenant: Option<String>,
        code: String,
    },
}

impl SignInProblem {
    pub fn new(
        status: StatusCode,
        code: &str,
        title: &'static str,
        message: impl Into<String>,
    ) -> Self {
        SignInProblem {
            status,
            code: code.to_string(),
            title,
            message: message.into(),
            hint: None,
            retry: None,
            retry_after: None,
            tenant: None,
        }
    }

    /// Names the tenant the refused sign-in was for.
    pub fn for_tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.to_string());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn retry(mut self, url: Option<String>) -> Self {
        self.retry = url.map(String::into_boxed_str);
        self
    }

    /// Microsoft's `error`/`error_description` (or token error) as a problem.
    pub fn from_microsoft(code: Option<u64>, description: &str, retry: Option<String>) -> Self {
        let first_line = description
            .lines()
            .next()
            .unwrap_or(description)
            .to_string();
        let code_text =
            code.map_or_else(|| "MICROSOFT_ERROR".to_string(), |c| format!("AADSTS{c}"));
        let mut p = SignInProblem::new(
            StatusCode::BAD_GATEWAY,
            &code_text,
            "Microsoft could not sign you in",
            first_line,
        );
        if let Some(h) = code.and_then(hint_for) {
            p.hint = Some(h.to_string());
        }
        p.status = StatusCode::UNAUTHORIZED;
        p.retry = retry.map(String::into_boxed_str);
        p
    }

    pub fn render(&self, request: &HeaderMap) -> Response<Body> {
        let html = !wants_json(request);
        let (content_type, body) = if !html {
            let json = serde_json::json!({ "errors": [{
                "code": self.code, "message": self.message, "hint": self.hint, "retry": self.retry
            }]});
            ("application/json", json.to_string())
        } else {
            ("text/html; charset=utf-8", self.html())
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if html {
            set_page_security_headers(response.headers_mut());
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(SignInEvent::Failed {
            tenant: self.tenant.clone(),
            code: self.code.clone(),
        });
        response
    }

    fn html(&self) -> String {
        let hint = self
            .hint
            .as_deref()
            .map(|h| format!("<p class=\"hint\">{}</p>", escape_html(h)))
            .unwrap_or_default();
        let retry = self
            .retry
            .as_deref()
            .map(|r| {
                format!(
                    "<p><a class=\"button\" href=\"{}\">Try again</a></p>",
                    escape_html(r)
                )
            })
            .unwrap_or_default();
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"referrer\" content=\"same-origin\"><title>{title}</title>\
             <link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"{css}\"></head><body><main class=\"page-medium\">\
             <div class=\"card\"><h1>{title}</h1><p>{message}</p>{hint}{retry}\
             <p class=\"code\">Error code: {code}</p></div></main></body></html>",
            title = escape_html(self.title),
            message = escape_html(&self.message),
            code = escape_html(&self.code),
            css = escape_html(&shared_stylesheet_url()),
        )
    }
}
