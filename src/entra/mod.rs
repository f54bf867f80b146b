//! Microsoft identity platform (Entra ID): national clouds, the tenant's certificate
//! credential, the `private_key_jwt` client assertion, app-only tokens for Graph, and the
//! typed errors with their AADSTS hints.
//!
//! - [`cloud`]: login and Graph hosts per national cloud, endpoint URLs.
//! - [`credential`]: "Generate New Key Pair": RSA key, self-signed certificate, thumbprints.
//! - [`oidc`]: ID token validation and the per-tenant JWKS cache.
//! - [`assertion`]: the signed client assertion JWT.
//! - [`token`]: client-credentials tokens, cached with single-flight refresh.
//! - [`error`]: Microsoft's token error body and the plain-language hints.
//! - [`http`]: the outbound client (no redirects).

pub mod assertion;
pub mod cloud;
pub mod credential;
pub mod error;
pub mod http;
pub mod oidc;
pub mod token;

pub use cloud::{CloudEndpoints, NationalCloud};
pub use error::OidcError;
pub use token::{AccessToken, SigningKeys, TokenFuture, TokenSource};
