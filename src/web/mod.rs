//! What the gateway's own web pages and browser-facing endpoints share, below both the
//! sign-in (`sso`) and the administration (`admin`) that use it: same-origin checks, the
//! post-login path check, per-client limits' bookkeeping, and the page chrome (embedded
//! assets, security headers).
//!
//! - [`origin`]: is a browser request cross-origin (`Sec-Fetch-Site`, `Origin`)?
//! - [`return_to`]: the same-origin path check for post-login destinations.
//! - [`assets`]: the embedded stylesheet and scripts, their cache-busting URLs, and the
//!   headers every gateway-rendered page carries.
//! - [`clients`]: who a client is for limits (IPv4, IPv6 /64) and a map of per-client state
//!   that forgets idle clients without scans.

pub mod assets;
pub mod clients;
pub mod origin;
pub mod return_to;
