//! The PBX connector's client for a PortSIP PBX v22 REST API (`docs/reference/` holds the
//! OpenAPI subset it follows): sign-in as the tenant's PBX administrator with token
//! renewal, users, their Microsoft 365 binding, and company contacts, with retries that
//! never repeat a creation whose outcome is unknown.
//!
//! - [`client`]: [`PbxClient`], one per tenant, and [`login_as`]/[`refresh`] for a user's
//!   own PBX session.
//! - [`wire`]: the request and answer bodies, in PortSIP's field names.
//! - [`credentials`]: random passwords and voicemail PINs that meet PortSIP's rules.
//! - [`error`]: [`PbxError`], in words an administrator can act on.

pub mod client;
pub mod credentials;
pub mod error;
pub mod wire;

pub use client::{PbxClient, PbxStats, PbxToken, login_as, refresh};
pub use error::PbxError;
