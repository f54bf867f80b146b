//! The one outbound HTTP client for Microsoft endpoints (Entra ID and Graph): rustls on the
//! process's aws-lc-rs provider, HTTP/2 when offered, timeouts, and no redirects followed:
//! a token or Graph request answered with a redirect to another host is an error, never a
//! place to send credentials.

use std::time::Duration;

/// Builds the client. `timeout` bounds each whole request.
pub fn microsoft_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("ms365-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static HTTP client configuration is valid")
}
