//! What the gateway's own web pages and browser-facing endpoints share, below both the
//! sign-in (`sso`) and the administration (`admin`) that use it: same-origin checks, the
//! post-login path check, and the page chrome (embedded assets, security headers).
//!
//! - [`origin`]: is a browser request cross-origin (`Sec-Fetch-Site`, `Origin`)?
//! - [`return_to`]: the same-origin path check for post-login destinations.
//! - [`assets`]: the embedded stylesheet and scripts, their cache-busting URLs, and the
//!   headers every gateway-rendered page carries.

pub mod assets;
pub mod origin;
pub mod return_to;
