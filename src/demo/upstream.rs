//! The demo PBX: a small plain-HTTP server on a free loopback port standing in for the PBX
//! web portal (`/portal/`), the WebRTC client (`/webrtc/`) and the PBX's REST API (`/api`,
//! the PortSIP stand-in the PBX connector writes to). Each page shows what the
//! gateway told the PBX about the signed-in user (the `X-PBX-*` headers), the user's photo
//! (`/ms365/photos/{user}`), name and contacts (fetched by the page from
//! `/ms365/directory/{me,contacts}`, same origin through the gateway), and the PBX's own
//! users as the connector made them. `/api/info` answers PortSIP-style JSON so the
//! gateway's Microsoft fields are merged in; everything else is a page saying "demo PBX
//! upstream". All header values are HTML-escaped, and the script only
//! ever writes `textContent`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::edge::problem::escape_html;
use crate::sso::identity::{X_PBX_DOMAIN, X_PBX_EXTENSION, X_PBX_ROLE, X_PBX_TENANT, X_PBX_USER};
use ms365_stand_ins::portsip_emulator::{PbxEmulator, PbxEmulatorConfig, PbxTenantSpec};

/// The tenant administrator the demo's PBX connector signs in as.
pub const PBX_ADMIN: &str = "contoso-admin";

/// What the demo PBX's pages read.
#[derive(Clone)]
struct Demo {
    domain: Arc<str>,
    pbx: PbxEmulator,
}

/// The running demo PBX.
pub struct DemoUpstream {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The PBX's REST API (its users are what the connector wrote).
    pub pbx: PbxEmulator,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl DemoUpstream {
    /// Binds `127.0.0.1:0` and serves in a background task; `domain` is the SIP domain the
    /// sign-in links name, `admin_password` the PBX administrator's password.
    pub async fn start(domain: &str, admin_password: &str) -> std::io::Result<DemoUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let pbx = PbxEmulator::new(PbxEmulatorConfig {
            seed: 1,
            tenants: vec![PbxTenantSpec {
                domain: domain.to_string(),
                admin_username: PBX_ADMIN.into(),
                admin_password: admin_password.into(),
                local_users: Vec::new(),
            }],
        });
        let app = router(domain, pbx.clone());
        let serve =
            axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
        let task = tokio::spawn(async move { serve.await });
        Ok(DemoUpstream {
            url,
            pbx,
            stop,
            task,
        })
    }

    /// Stops accepting, lets open requests finish and waits for the server.
    pub async fn stop(self) -> std::io::Result<()> {
        self.stop.cancel();
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// The demo PBX's routes: its pages and the PortSIP REST API of `pbx`.
pub fn router(domain: &str, pbx: PbxEmulator) -> Router {
    let demo = Demo {
        domain: Arc::from(domain),
        pbx: pbx.clone(),
    };
    Router::new()
        .route("/portal/", get(portal))
        .route("/webrtc/", get(webrtc))
        .route("/api/info", get(info))
        .fallback(catch_all)
        .with_state(demo)
        .merge(pbx.api_router())
}

async fn portal(State(demo): State<Demo>, headers: HeaderMap) -> Html<String> {
    let page = client_page("Demo PBX web portal", "portal", &demo.domain, &headers);
    Html(page.replace("</body>", &format!("{}</body>", pbx_users(&demo))))
}

async fn webrtc(State(demo): State<Demo>, headers: HeaderMap) -> Html<String> {
    Html(client_page(
        "Demo WebRTC client",
        "webrtc",
        &demo.domain,
        &headers,
    ))
}

/// The PBX's own users list: the extensions the PBX connector created and bound.
fn pbx_users(demo: &Demo) -> String {
    let mut users = demo.pbx.users(&demo.domain);
    let text = |u: &serde_json::Value, k: &str| escape_html(u[k].as_str().unwrap_or(""));
    users.sort_by(|a, b| {
        a["extension_number"]
            .as_str()
            .cmp(&b["extension_number"].as_str())
    });
    let rows: String = users
        .iter()
        .map(|u| {
            let enabled = if u["enabled"] == false {
                "disabled"
            } else {
                "enabled"
            };
            let bound = if text(u, "ms365_binding").is_empty() {
                ""
            } else {
                "Microsoft 365"
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{enabled}</td><td>{bound}</td></tr>",
                text(u, "extension_number"),
                text(u, "name"),
                text(u, "display_name")
            )
        })
        .collect();
    format!(
        "<h2>The PBX's users</h2><p class=\"note\">What the PBX connector wrote through the \
         PBX's REST API ({n}).</p><table id=\"pbx-users\"><tr><th>Extension</th><th>Username</th>\
         <th>Name</th><th>State</th><th>Bound to</th></tr>{rows}</table>",
        n = users.len()
    )
}

async fn info() -> Response {
    axum::Json(serde_json::json!({ "name": "demo PBX", "version": "demo" })).into_response()
}

async fn catch_all(OriginalUri(uri): OriginalUri) -> Response {
    let status = if uri.path() == "/" {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let body = format!(
        "{HEAD}<title>Demo PBX</title></head><body><h1>demo PBX upstream</h1>\
         <p>The built-in stand-in for the PBX answered <code>{path}</code>.</p>\
         <ul><li><a href=\"/portal/\">Web portal</a></li><li><a href=\"/webrtc/\">WebRTC client</a></li>\
         <li><a href=\"/ms365/admin\">Microsoft 365 integration (admin)</a></li></ul></body></html>",
        path = escape_html(uri.path()),
    );
    (status, Html(body)).into_response()
}

const HEAD: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>\
    body{font-family:system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem}\
    th{text-align:left;padding-right:1rem}img{border-radius:50%;background:#ddd}\
    .note{color:#555}</style>";

/// A client page: who is signed in, or a sign-in link.
fn client_page(title: &str, client: &str, domain: &str, headers: &HeaderMap) -> String {
    let user = headers
        .get(X_PBX_USER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let body = match user {
        Some(user) => signed_in(user, headers),
        None => format!(
            "<p id=\"anonymous\">Nobody is signed in.</p><p><a href=\"/ms365/?domain={d}&amp;client={client}\">\
             Sign in with Microsoft</a></p>",
            d = escape_html(&percent_encode(domain)),
        ),
    };
    format!(
        "{HEAD}<title>{t}</title></head><body><h1>{t}</h1><p class=\"note\">This page stands in for \
         the PBX. It shows what ms365-gateway tells the PBX about the signed-in user.</p>{body}</body></html>",
        t = escape_html(title),
    )
}

/// The identity table, photo, name and contacts of a signed-in user.
fn signed_in(user: &str, headers: &HeaderMap) -> String {
    let mut rows = String::new();
    for name in [
        X_PBX_TENANT,
        X_PBX_DOMAIN,
        X_PBX_USER,
        X_PBX_EXTENSION,
        X_PBX_ROLE,
    ] {
        let v = headers
            .get(&name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        rows.push_str(&format!(
            "<tr><th>{}</th><td id=\"{}\">{}</td></tr>",
            escape_html(name.as_str()),
            escape_html(name.as_str()),
            escape_html(&v)
        ));
    }
    format!(
        "<p><img src=\"/ms365/photos/{photo}\" alt=\"profile photo\" width=\"96\" height=\"96\" \
         onerror=\"this.style.visibility='hidden'\"></p><h2 id=\"name\"></h2>\
         <table>{rows}</table><h2>PBX session</h2><p id=\"pbx-session\">asking the PBX…</p>\
         <p><a href=\"/ms365/logout\">Sign out</a></p>\
         <h2>Contacts</h2><ul id=\"contacts\"><li>loading…</li></ul><script>{SCRIPT}</script>",
        photo = escape_html(&percent_encode(user)),
    )
}

/// Fills in the name, the PBX's own session of the user (`GET /api/login`, which the gateway
/// sends with the user's PBX token) and the contacts; only `textContent` is ever written.
const SCRIPT: &str = r#"
fetch('/api/login', {headers: {accept: 'application/json'}}).then(async r => {
  const el = document.getElementById('pbx-session');
  if (r.ok) {
    const s = await r.json();
    el.textContent = 'The PBX knows you: ' + (s.name || '') + ', extension ' +
      (s.extension_number || '') + ', PBX role ' + (s.role || '') + ' (user id ' + (s.id || '') + ')';
    el.dataset.pbxUser = s.id || '';
    return;
  }
  const mine = await fetch('/ms365/session').then(x => x.ok ? x.json() : {}).catch(() => ({}));
  el.textContent = 'The PBX does not know you (HTTP ' + r.status + '). ' +
    ((mine.pbx && mine.pbx.message) || '');
});
fetch('/ms365/directory/me').then(r => r.ok ? r.json() : {}).then(me => {
  document.getElementById('name').textContent = me.display_name || '';
});
fetch('/ms365/directory/contacts').then(r => r.ok ? r.json() : {items: []}).then(d => {
  const ul = document.getElementById('contacts');
  ul.replaceChildren();
  const items = d.items || [];
  for (const c of items.slice(0, 100)) {
    const li = document.createElement('li');
    const phones = [c.mobile_phone, c.business, c.email].filter(Boolean).join(', ');
    li.textContent = c.name + (phones ? ' (' + phones + ')' : '') +
      (c.kind === 'company' ? ' [company]' : '');
    ul.append(li);
  }
  if (!items.length) { const li = document.createElement('li'); li.textContent = 'none'; ul.append(li); }
});
"#;

/// Percent-encodes everything but RFC 3986 unreserved characters (a path segment or a
/// query value).
fn percent_encode(s: &str) -> String {
    crate::encoding::percent_encode(s, crate::encoding::NOT_UNRESERVED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn identity_headers_are_escaped() {
        let mut h = HeaderMap::new();
        h.insert(X_PBX_USER, HeaderValue::from_static("u<1>&\"x\""));
        h.insert(X_PBX_EXTENSION, HeaderValue::from_static("1000"));
        let page = client_page("Portal", "portal", "contoso.demo", &h);
        assert!(!page.contains("u<1>"), "{page}");
        assert!(page.contains("u&lt;1&gt;&amp;"), "{page}");
        assert!(page.contains("/ms365/photos/u%3C1%3E%26%22x%22"), "{page}");
        assert!(page.contains("<td id=\"x-pbx-extension\">1000</td>"));
    }

    #[test]
    fn anonymous_visitors_get_a_sign_in_link() {
        let page = client_page("WebRTC", "webrtc", "contoso.demo", &HeaderMap::new());
        assert!(page.contains("/ms365/?domain=contoso.demo&amp;client=webrtc"));
        assert!(page.contains("id=\"anonymous\""));
    }
}
