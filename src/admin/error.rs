//! What the admin API answers when it cannot do what was asked, in PortSIP's error format
//! (`{"errors":[{"code","message","detail"}]}`), with every status code chosen here and
//! nowhere else.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::entra::OidcError;
use crate::graph::GraphError;
use crate::store::StoreError;
use crate::tenant_keys::TenantKeyError;

/// A failed admin API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is wrong; `field` is its path as the API names it.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many failed attempts; try again in {retry_after} s")]
    TooManyAttempts { retry_after: u64 },
    /// Microsoft refused or failed; the message says what to do.
    #[error("{message}")]
    Microsoft {
        message: String,
        aadsts: Option<u64>,
        hint: Option<&'static str>,
    },
    #[error("the sync worker has stopped")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Microsoft { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "VALIDATE_FAILED",
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::TooManyAttempts { .. } => "TOO_MANY_REQUESTS",
            ApiError::Microsoft { .. } => "MICROSOFT_ERROR",
            ApiError::Unavailable => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    fn detail(&self) -> Value {
        match self {
            ApiError::Validation { field, .. } => json!({ "field": field }),
            ApiError::Microsoft { aadsts, hint, .. } => json!({ "aadsts": aadsts, "hint": hint }),
            _ => Value::Null,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(reason) = &self {
            tracing::error!(%reason, "admin API request failed");
        }
        // A database's or library's own words can name hosts, tables and paths: they go to
        // the log, and the client is told where to look.
        let message = match &self {
            ApiError::Internal(_) => "internal error; the gateway's log has the details".into(),
            other => other.to_string(),
        };
        let body = json!({ "errors": [{
            "code": self.code(),
            "message": message,
            "detail": self.detail(),
        }]});
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            ApiError::TooManyAttempts { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ms365-gateway\""),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<TenantKeyError> for ApiError {
    fn from(e: TenantKeyError) -> Self {
        match e {
            TenantKeyError::Credential(e) => e.into(),
            TenantKeyError::Store(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<OidcError> for ApiError {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Crypto(_) | OidcError::KeyStore(_) => ApiError::Internal(e.to_string()),
            OidcError::NoCredential { .. } | OidcError::NotConfigured(_) => {
                ApiError::Conflict(e.to_string())
            }
            other => ApiError::Microsoft {
                aadsts: other.aadsts(),
                hint: other.aadsts().and_then(crate::entra::error::hint_for),
                message: other.to_string(),
            },
        }
    }
}

impl From<GraphError> for ApiError {
    fn from(e: GraphError) -> Self {
        match e {
            GraphError::Token(t) => t.into(),
            other => ApiError::Microsoft {
                message: other.to_string(),
                aadsts: None,
                hint: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_keep_their_words_in_the_log() {
        let response =
            ApiError::Internal("connection to 10.1.2.3:5432 (table sessions) refused".into())
                .into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("INTERNAL"), "{body}");
        assert!(
            !body.contains("10.1.2.3") && !body.contains("sessions"),
            "{body}"
        );
    }
}
