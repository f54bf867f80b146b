//! The `/ms365/admin` page (its assets land with the page itself).

pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
}
