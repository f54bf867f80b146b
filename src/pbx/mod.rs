//! The PBX connector's client for a PortSIP PBX v22 REST API (`docs/reference/` holds the
//! OpenAPI subset it follows): sign-in as the tenant's PBX administrator with token
//! renewal, users, their Microsoft 365 binding, and company contacts, with retries that
//! never repeat a creation whose outcome is unknown.
//!
//! - [`client`]: [`PbxClient`], one per tenant: the request path (permits, token, retries,
//!   one new sign-in on a 401) and the API calls.
//! - `session`: sign-in and token renewal, and [`login_as`]/[`refresh`] for a user's own
//!   PBX session.
//! - [`retry`]: which failures are retried, how long to wait, and why creations are not
//!   repeated after a timeout.
//! - `answer`: PortSIP's answers read into wire types or errors.
//! - [`wire`]: the request and answer bodies, in PortSIP's field names.
//! - [`credentials`]: random passwords and voicemail PINs that meet PortSIP's rules.
//! - [`error`]: [`PbxError`], in words an administrator can act on.

mod answer;
pub(crate) mod client;
pub(crate) mod credentials;
pub(crate) mod error;
pub(crate) mod retry;
mod session;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

pub use client::{PbxClient, PbxStats};
pub use credentials::user_password_secret;
pub use error::PbxError;
pub(crate) use session::renew_at;
pub use session::{PbxToken, login_as, refresh};
