//! Stand-ins for the two services ms365-gateway talks to and nothing here may reach:
//! Microsoft (Entra ID + Graph) and a PortSIP PBX. They behave as Microsoft and PortSIP
//! document, faults included, and serve over real sockets. The gateway's tests, benchmarks
//! and `ms365-gateway demo` use them; the gateway's production code never does, which is
//! why they are a crate of their own (the way sozu keeps its `e2e` servers out of the proxy).
//!
//! - [`emulator`]: Entra ID + Microsoft Graph v1.0 (`docs/emulator.md`).
//! - [`portsip_emulator`]: the PortSIP v22 REST API, every request validated against the
//!   published OpenAPI subset in `docs/reference/`.
#![forbid(unsafe_code)]

pub mod emulator;
pub mod portsip_emulator;
