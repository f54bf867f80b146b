//! `/ms365/admin`: the tenant administrator's "Microsoft 365 Integration" page. Everything is
//! embedded in the binary; no CDN, no framework, no build step. Its script and stylesheet are
//! the gateway's assets ([`crate::web::assets`], which serves them); the page talks to the
//! same-origin admin API (`docs/admin-api.md`). The HTML is `no-store` and carries the
//! headers of every gateway-rendered page (strict CSP: no inline script or style).

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::RawQuery;
use axum::routing::get;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};

use crate::web::assets::{ASSETS, ASSETS_PREFIX, asset_url, set_page_security_headers};

/// Where the page lives.
pub const PAGE_PATH: &str = "/ms365/admin";
const INDEX_HTML: &str = include_str!("../../assets/admin/index.html");

/// The page, with its asset links carrying their content hashes.
static INDEX: LazyLock<String> = LazyLock::new(|| {
    ASSETS
        .iter()
        .fold(INDEX_HTML.to_string(), |html, (name, _, _)| {
            html.replace(
                &format!("\"{ASSETS_PREFIX}{name}\""),
                &format!("\"{}\"", asset_url(name)),
            )
        })
});

/// `GET /ms365/admin`, `GET /ms365/admin/` (redirected) and the assets it links.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PAGE_PATH, get(index))
        .route("/ms365/admin/", get(trailing_slash))
        .merge(crate::web::assets::routes())
}

async fn index() -> Response<Body> {
    let mut response = Response::new(Body::from(INDEX.as_str()));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_page_security_headers(headers);
    response
}

/// `/ms365/admin/` → `/ms365/admin`, keeping `?tenant=`.
async fn trailing_slash(RawQuery(query): RawQuery) -> Response<Body> {
    let target = match query.as_deref().filter(|q| !q.is_empty()) {
        Some(q) => format!("{PAGE_PATH}?{q}"),
        None => PAGE_PATH.to_string(),
    };
    let location =
        HeaderValue::from_str(&target).unwrap_or_else(|_| HeaderValue::from_static(PAGE_PATH));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(LOCATION, location);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::assets::{ADMIN_CSS, ADMIN_JS, CSP, SHARED_CSS};
    use http::Request;
    use http::header::{CONTENT_SECURITY_POLICY, ETAG, X_CONTENT_TYPE_OPTIONS};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// The ids the browser tests drive.
    const IDS: &[&str] = &[
        "token",
        "token-submit",
        "application_id",
        "directory_id",
        "national_cloud",
        "save",
        "generate-key",
        "download-key",
        "test-connection",
        "test-result",
        "sync-now",
        "sync-progress",
        "sync-phase",
        "runs",
        "redirect_uri",
        "sbc_redirect_uri",
        "cert-thumbprint",
        "cert-warning",
        "message",
        "users-enabled",
        "starting_extension_number",
        "sign-in-enabled",
    ];

    /// Every value of `attr="…"` in `html`.
    fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
        let needle = format!(" {attr}=\"");
        html.match_indices(&needle)
            .map(|(at, _)| {
                let rest = &html[at + needle.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect()
    }

    async fn get(uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut request = Request::builder().uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        routes::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn every_driven_id_exists_once_and_labels_point_at_controls() {
        let ids = attr_values(INDEX_HTML, "id");
        for id in IDS {
            assert_eq!(
                ids.iter().filter(|i| *i == id).count(),
                1,
                "#{id} must exist exactly once"
            );
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "duplicate ids");
        for target in attr_values(INDEX_HTML, "for") {
            assert!(ids.contains(&target), "<label for={target}> has no control");
        }
        for list in attr_values(INDEX_HTML, "aria-describedby")
            .into_iter()
            .chain(attr_values(INDEX_HTML, "aria-labelledby"))
        {
            for id in list.split_whitespace() {
                assert!(ids.contains(&id), "aria reference to missing #{id}");
            }
        }
        // Everything the script looks up by id is on the page.
        for (at, _) in ADMIN_JS.match_indices("$('") {
            let rest = &ADMIN_JS[at + 3..];
            let id = &rest[..rest.find('\'').unwrap()];
            assert!(ids.contains(&id), "admin.js uses missing #{id}");
        }
    }

    #[test]
    fn the_page_loads_only_same_origin_assets_and_nothing_inline() {
        let html = INDEX.as_str();
        let links: Vec<&str> = attr_values(html, "src")
            .into_iter()
            .chain(attr_values(html, "href"))
            .filter(|l| *l != "data:,") // the empty favicon: no request for /favicon.ico
            .collect();
        assert_eq!(links.len(), 3, "{links:?}");
        for link in links {
            let (path, version) = link.split_once("?v=").expect("versioned asset URL");
            let name = path.strip_prefix(ASSETS_PREFIX).expect("same-origin asset");
            assert_eq!(asset_url(name), link);
            assert_eq!(version.len(), 12);
        }
        assert!(!html.contains(" style="), "inline style attribute");
        assert!(!html.contains("<style"), "inline stylesheet");
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"/ms365/assets/").count(),
            "inline script"
        );
        let handler = html.match_indices(" on").any(|(at, _)| {
            let rest = &html[at + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        assert!(
            !html.contains("//"),
            "no absolute or protocol-relative URLs"
        );
        for text in [ADMIN_JS, ADMIN_CSS, SHARED_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("@import"));
        }
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "eval(",
            "document.write",
        ] {
            assert!(!ADMIN_JS.contains(forbidden), "admin.js uses {forbidden}");
        }
        // Every form control is keyboard-reachable: no click handlers on non-buttons.
        assert!(!html.contains("<div tabindex") && !html.contains("role=\"button\""));
    }

    #[tokio::test]
    async fn the_page_is_served_no_store_under_the_strict_csp() {
        let page = get("/ms365/admin", &[]).await;
        assert_eq!(page.status(), StatusCode::OK);
        let h = page.headers();
        assert_eq!(h[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[CACHE_CONTROL], "no-store");
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[CONTENT_SECURITY_POLICY], CSP);
        assert!(CSP.contains("script-src 'self'") && CSP.contains("frame-ancestors 'none'"));
        let body = text(page).await;
        assert!(body.contains(&asset_url("admin.js")));

        let moved = get("/ms365/admin/?tenant=acme.test", &[]).await;
        assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(moved.headers()[LOCATION], "/ms365/admin?tenant=acme.test");
    }

    #[tokio::test]
    async fn assets_carry_their_type_and_are_cached_only_by_content_hash() {
        for (name, content_type, body) in ASSETS {
            let versioned = get(&asset_url(name), &[]).await;
            assert_eq!(versioned.status(), StatusCode::OK);
            let h = versioned.headers().clone();
            assert_eq!(h[CONTENT_TYPE], content_type);
            assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[CACHE_CONTROL], "public, max-age=31536000, immutable");
            assert_eq!(text(versioned).await, body);

            let plain = get(&format!("{ASSETS_PREFIX}{name}"), &[]).await;
            assert_eq!(plain.headers()[CACHE_CONTROL], "no-cache");
            let stale = get(&format!("{ASSETS_PREFIX}{name}?v=000000000000"), &[]).await;
            assert_eq!(stale.headers()[CACHE_CONTROL], "no-cache");

            let etag = h[ETAG].to_str().unwrap();
            let again = get(
                &format!("{ASSETS_PREFIX}{name}"),
                &[("if-none-match", etag)],
            )
            .await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        }
        let missing = get("/ms365/assets/nope.js", &[]).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
