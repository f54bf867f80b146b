//! `/ms365/`: the sign-in entry for the portal and the WebRTC client. It asks for the SIP
//! domain (or takes it from `?domain=`, else from the `Host` the browser used when that is a
//! tenant's domain) and offers "Sign in with Microsoft" only when that tenant has it on.
//! Plain HTML, no script; its look is the shared `/ms365/assets/ms365.css`
//! ([`crate::web::assets`]), under the same strict Content-Security-Policy as the admin page.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, Uri};
use serde::Deserialize;

use super::login::tenant_info;
use super::state::Sso;
use crate::edge::headers::request_host;
use crate::edge::problem::escape_html;
use crate::web::assets::{set_page_security_headers, shared_stylesheet_url};

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub domain: Option<String>,
    pub client: Option<String>,
    pub return_to: Option<String>,
    pub logged_out: Option<String>,
}

pub async fn page(
    State(sso): State<Arc<Sso>>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    let asked = q
        .domain
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let domain = match asked {
        Some(d) => Some(d),
        None => host_tenant_domain(&sso, &headers, &uri).await,
    };
    let domain = domain.as_deref();
    let client = match q.client.as_deref() {
        Some("webrtc") => "webrtc",
        _ => "portal",
    };
    let return_to = q
        .return_to
        .as_deref()
        .and_then(crate::web::return_to::validate)
        .unwrap_or("");
    let microsoft = match domain {
        Some(d) => tenant_info(&sso, Some(d))
            .await
            .ok()
            .filter(|i| i["enable_ms365_integration"] == true)
            .is_some(),
        None => false,
    };
    let html = render(domain, client, return_to, microsoft, q.logged_out.is_some());
    let mut response = Response::new(Body::from(html));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_page_security_headers(headers);
    response
}

/// The host the browser addressed, when it is the SIP domain of a tenant.
async fn host_tenant_domain(sso: &Sso, headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let host = request_host(headers, uri)?;
    if host.starts_with('[') {
        return None; // an IPv6 literal is no one's SIP domain
    }
    let host = host.split(':').next()?.trim_end_matches('.');
    if host.is_empty() || host.len() > 253 || !host.contains('.') {
        return None;
    }
    let tenant = sso.store.tenant_by_domain(host).await.ok()??;
    Some(tenant.domain)
}

/// The page: the Microsoft button first when the tenant has it on, then the domain form.
fn render(
    domain: Option<&str>,
    client: &str,
    return_to: &str,
    microsoft: bool,
    logged_out: bool,
) -> String {
    let d = escape_html(domain.unwrap_or(""));
    let r = escape_html(return_to);
    let hidden = format!(
        "<input type=\"hidden\" name=\"client\" value=\"{client}\">\
         <input type=\"hidden\" name=\"return_to\" value=\"{r}\">"
    );
    let notice = if logged_out {
        "<p class=\"notice ok\" role=\"status\">You are signed out.</p>"
    } else {
        ""
    };
    let (top, continue_class, domain_heading) = match (domain, microsoft) {
        (Some(domain), true) => (
            // A link, not a form: CSP's form-action would also apply to the redirect on to
            // Microsoft, and this is plain navigation anyway.
            format!(
                "<p>Organisation: <strong>{d}</strong></p>\
                 <p><a class=\"button ms\" id=\"ms365-signin\" href=\"{href}\"><span class=\"logo\" aria-hidden=\"true\"></span>Sign in with Microsoft</a></p>\
                 <div class=\"divider\">or another organisation</div>",
                href = escape_html(&login_href(domain, client, return_to)),
            ),
            "secondary",
            "",
        ),
        (Some(_), false) => (
            format!(
                "<p id=\"no-ms365\" class=\"notice warn\">Microsoft 365 sign-in is not available for \
                 the organisation <strong>{d}</strong>. Check the domain, or sign in with your PBX \
                 user name and password.</p>"
            ),
            "",
            "",
        ),
        (None, _) => (
            String::new(),
            "",
            "<p class=\"muted\">Enter your organisation's SIP domain to continue.</p>",
        ),
    };
    let continue_class = if continue_class.is_empty() {
        String::new()
    } else {
        format!(" class=\"{continue_class}\"")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"same-origin\"><title>Sign in</title>\
         <link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"{css}\"></head>\
         <body><main class=\"page-narrow\"><div class=\"card\"><h1>Sign in</h1>{notice}{domain_heading}{top}\
         <form method=\"get\" action=\"/ms365/\" class=\"stack\"><div>\
         <label for=\"domain\">Organisation SIP domain</label>\
         <input type=\"text\" id=\"domain\" name=\"domain\" value=\"{d}\" autocomplete=\"organization\" \
         autocapitalize=\"none\" spellcheck=\"false\" required aria-describedby=\"domain-help\">\
         <p id=\"domain-help\" class=\"muted\">The part after @ in your SIP address, e.g. example.com.</p></div>\
         {hidden}<button type=\"submit\"{continue_class}>Continue</button></form></div></main></body></html>",
        css = escape_html(&shared_stylesheet_url()),
    )
}

/// `/ms365/login?domain=…&client=…&return_to=…`, encoded.
fn login_href(domain: &str, client: &str, return_to: &str) -> String {
    let mut url = reqwest::Url::parse("https://gateway.invalid/ms365/login").expect("static URL");
    url.query_pairs_mut()
        .append_pair("domain", domain)
        .append_pair("client", client)
        .append_pair("return_to", return_to);
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_script_free_and_escapes_what_it_is_given() {
        let html = render(
            Some("a\"><script>x</script>.test"),
            "portal",
            "/portal/",
            true,
            true,
        );
        assert!(!html.contains("<script"));
        assert!(!html.contains(" style="));
        assert!(html.contains("id=\"ms365-signin\"") && html.contains("You are signed out."));
        assert!(html.contains(
            "href=\"/ms365/login?domain=a%22%3E%3Cscript%3Ex%3C%2Fscript%3E.test&amp;client=portal&amp;return_to=%2Fportal%2F\""
        ));
        assert!(html.contains(&shared_stylesheet_url()));
        let off = render(Some("beta.test"), "webrtc", "", false, false);
        assert!(off.contains("id=\"no-ms365\"") && !off.contains("Sign in with Microsoft"));
        assert!(off.contains("name=\"client\" value=\"webrtc\""));
        let none = render(None, "portal", "", false, false);
        assert!(!none.contains("no-ms365") && !none.contains("ms365-signin"));
    }
}
