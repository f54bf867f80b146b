//! `/ms365/`: the sign-in entry for the portal and the WebRTC client. It asks for the SIP
//! domain (or takes it from `?domain=`) and offers "Sign in with Microsoft" only when that
//! tenant has it on. Plain HTML, no script, no external assets.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use serde::Deserialize;

use super::login::tenant_info;
use super::state::Sso;
use crate::edge::problem::escape_html;

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub domain: Option<String>,
    pub client: Option<String>,
    pub return_to: Option<String>,
    pub logged_out: Option<String>,
}

pub async fn page(State(sso): State<Arc<Sso>>, Query(q): Query<PageQuery>) -> Response<Body> {
    let domain = q.domain.as_deref().map(str::trim).filter(|d| !d.is_empty());
    let client = match q.client.as_deref() {
        Some("webrtc") => "webrtc",
        _ => "portal",
    };
    let return_to = q
        .return_to
        .as_deref()
        .and_then(super::return_to::validate)
        .unwrap_or("");
    let microsoft = match domain {
        Some(d) => tenant_info(&sso, Some(d))
            .await
            .ok()
            .filter(|i| i["enable_ms365_integration"] == true)
            .is_some(),
        None => false,
    };
    let notice = if q.logged_out.is_some() {
        "<p class=\"notice\">You are signed out.</p>"
    } else {
        ""
    };
    let button = match (domain, microsoft) {
        (Some(d), true) => format!(
            "<form method=\"get\" action=\"/ms365/login\"><input type=\"hidden\" name=\"domain\" value=\"{d}\">\
             <input type=\"hidden\" name=\"client\" value=\"{client}\"><input type=\"hidden\" name=\"return_to\" value=\"{r}\">\
             <button class=\"ms\" type=\"submit\" id=\"ms365-signin\"><span class=\"logo\" aria-hidden=\"true\"></span>Sign in with Microsoft</button></form>",
            d = escape_html(d),
            r = escape_html(return_to)
        ),
        (Some(_), false) => {
            "<p id=\"no-ms365\">Microsoft 365 sign-in is not available for this organisation.</p>"
                .to_string()
        }
        (None, _) => String::new(),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign in</title><style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:3rem auto;padding:0 1rem}}\
         input[type=text]{{width:100%;padding:.5rem;box-sizing:border-box}}button{{padding:.6rem 1rem;margin-top:.5rem}}\
         .ms{{display:flex;align-items:center;gap:.6rem;background:#fff;border:1px solid #8c8c8c;font-weight:600}}\
         .logo{{width:21px;height:21px;background:conic-gradient(#f25022 0 25%,#7fba00 0 50%,#ffb900 0 75%,#00a4ef 0)}}\
         .notice{{background:#eef7ee;padding:.5rem}}</style></head><body><h1>Sign in</h1>{notice}\
         <form method=\"get\" action=\"/ms365/\"><label for=\"domain\">Organisation SIP domain</label>\
         <input type=\"text\" id=\"domain\" name=\"domain\" value=\"{d}\" autocomplete=\"organization\" required>\
         <input type=\"hidden\" name=\"client\" value=\"{client}\"><input type=\"hidden\" name=\"return_to\" value=\"{r}\">\
         <button type=\"submit\">Continue</button></form>{button}</body></html>",
        d = escape_html(domain.unwrap_or("")),
        r = escape_html(return_to),
    );
    let mut response = Response::new(Body::from(html));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
