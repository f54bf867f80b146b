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

pub(crate) mod assertion;
pub(crate) mod cloud;
pub(crate) mod credential;
pub(crate) mod error;
pub(crate) mod http;
pub(crate) mod oidc;
pub(crate) mod token;

pub use assertion::AssertionAlg;
pub use cloud::{CloudEndpoints, NationalCloud};
pub use credential::{KeyBits, TenantCredential};
pub use error::OidcError;
pub use http::microsoft_client;
pub use oidc::{
    IdTokenClaims, IdTokenExpectations, JwksCache, validate_id_token, validate_id_token_with_key,
};
pub use token::{AccessToken, AppTokenClient, CodeExchange, SigningKeys, TokenFuture, TokenSource};
