//! Reading PortSIP's answers: a success body decoded into its wire type, an error answer
//! turned into the [`PbxError`] its `{"errors":[{code, message, detail}]}` body describes.
//! Bodies are read with a size cap, because a misconfigured `api_url` may point at
//! something that streams far more than any PortSIP answer.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::error::PbxError;
use super::wire::ErrorBody;

/// Largest success body read: a 100-user page is some tens of KB.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Error bodies are read this far: enough for PortSIP's error JSON.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A success passes; an error answer becomes the error PortSIP's body describes. 5xx and
/// 429 do not reach here (the retry policy turns them into `Unreachable`); 401 is the
/// caller's to handle before.
pub async fn check(response: reqwest::Response, what: &str) -> Result<reqwest::Response, PbxError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::NOT_FOUND {
        return Err(PbxError::NotFound {
            what: what.to_string(),
        });
    }
    let body = read_capped(response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    Err(rejected(status, &body))
}

/// The error of a 4xx answer with this body (PortSIP's error JSON, or anything else).
pub fn rejected(status: StatusCode, body: &[u8]) -> PbxError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let first = parsed.errors.into_iter().next().unwrap_or_default();
    let detail = first.detail.as_ref();
    let field = detail
        .and_then(|d| d.get("field"))
        .and_then(|f| f.as_str())
        .map(str::to_string);
    let mut message = first
        .message
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    // `detail` is an object naming the field, or sometimes plain text worth keeping.
    if let Some(text) = detail.and_then(|d| d.as_str()).filter(|t| !t.is_empty()) {
        message = format!("{message}: {text}");
    }
    PbxError::Rejected {
        status: status.as_u16(),
        code: first.code.unwrap_or_else(|| "ERROR".into()),
        message,
        field,
    }
}

/// The body of a success answer, decoded. A body that cannot be read (cut off, too large)
/// or is not the documented JSON is a `Protocol` error.
pub async fn decode<T: DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> Result<T, PbxError> {
    let bytes = read_capped(response, MAX_BODY)
        .await
        .map_err(|e| PbxError::Protocol(format!("{what}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| PbxError::Protocol(format!("{what}: {e}")))
}

/// The body, refused past `limit` bytes.
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("the answer is larger than {limit} bytes"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| super::retry::error_chain(&e))?
    {
        if out.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A path segment: ids are opaque, so anything but unreserved characters is encoded. An
/// empty id, `.` or `..` would address another resource (URL parsers resolve dot segments,
/// encoded or not), so they are refused.
pub fn segment(id: &str) -> Result<String, PbxError> {
    if matches!(id, "" | "." | "..") {
        return Err(PbxError::Protocol(format!("`{id}` is not a PBX object id")));
    }
    Ok(crate::encoding::percent_encode(
        id,
        crate::encoding::NOT_UNRESERVED,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portsip_errors_keep_code_message_and_field() {
        let body = serde_json::json!({"errors": [{
            "code": "VALIDATE_FAILED",
            "message": "extension_number must be 3-64 digits",
            "detail": {"field": "extension_number"},
        }]});
        let body = serde_json::to_vec(&body).unwrap();
        let PbxError::Rejected {
            status,
            code,
            message,
            field,
        } = rejected(StatusCode::BAD_REQUEST, &body)
        else {
            panic!("not Rejected")
        };
        assert_eq!((status, code.as_str()), (400, "VALIDATE_FAILED"));
        assert_eq!(message, "extension_number must be 3-64 digits");
        assert_eq!(field.as_deref(), Some("extension_number"));
    }

    #[test]
    fn other_error_bodies_still_say_something() {
        let e = rejected(StatusCode::CONFLICT, b"<html>oops</html>");
        assert_eq!(e.to_string(), "HTTP 409 ERROR: Conflict");
        let body = br#"{"errors":[{"code":"E","message":"no","detail":"the name is taken"}]}"#;
        let e = rejected(StatusCode::BAD_REQUEST, body);
        assert_eq!(e.to_string(), "HTTP 400 E: no: the name is taken");
    }

    #[test]
    fn ids_are_encoded_as_one_segment() {
        assert_eq!(segment("NzAwNTUx-_.~").unwrap(), "NzAwNTUx-_.~");
        assert_eq!(segment("a/b c?d").unwrap(), "a%2Fb%20c%3Fd");
        for bad in ["", ".", ".."] {
            assert!(
                matches!(segment(bad), Err(PbxError::Protocol(_))),
                "{bad:?}"
            );
        }
    }
}
