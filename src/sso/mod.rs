//! "Sign in with Microsoft": the login start, `/ms365/redirect`, PBX sessions.
//!
//! - [`return_to`]: the same-origin path check for post-login destinations.
//! - [`seal`]: AES-256-GCM sealed cookies with rotating keys.

pub mod return_to;
pub mod seal;
