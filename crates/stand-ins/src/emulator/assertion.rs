//! Client authentication at the token endpoint: only `private_key_jwt` (a client assertion
//! signed with a certificate uploaded to the app), checked the way Entra does — thumbprint
//! lookup (`x5t#S256` or `x5t`), certificate validity, signature (RS256 or PS256), then the
//! claims: `iss` = `sub` = client id, `aud` = this tenant's token endpoint, `exp`/`nbf`
//! within five minutes of clock skew and at most ten minutes apart, a `jti` never seen
//! before. Each failure answers with the AADSTS code Microsoft uses for it.

use std::collections::HashMap;

use aws_lc_rs::signature::{self, RsaParameters};

use super::Emulator;
use super::identity::AadError;
use super::keys::{Jwt, verify};
use super::state::{CertRecord, Tenant, lock};
use super::util::{b64url_decode, hex_upper, iso};

pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const SKEW: i64 = 300;
const MAX_LIFETIME: i64 = 600;
const DOCS: &str = "Review the documentation at \
    https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials .";

/// The authenticated application, copied out of the registration.
#[derive(Debug, Clone)]
pub(crate) struct ClientApp {
    pub client_id: String,
    pub display_name: String,
    pub permissions: Vec<String>,
    pub redirect_uris: Vec<String>,
}

type Form = HashMap<String, String>;

/// Authenticates the client of a token request, or says why not.
pub(crate) fn authenticate(
    emu: &Emulator,
    tenant: &Tenant,
    form: &Form,
) -> Result<ClientApp, AadError> {
    let assertion = form.get("client_assertion").filter(|a| !a.is_empty());
    let parsed = assertion.and_then(|a| Jwt::parse(a));
    let client_id = form
        .get("client_id")
        .cloned()
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|j| j.claim_str("sub").map(str::to_string))
        })
        .ok_or_else(|| AadError::missing("client_id"))?;
    let app = lookup(tenant, &client_id)?;
    let Some(assertion) = assertion else {
        return Err(missing_credential(form, &client_id));
    };
    if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
        return Err(AadError::bad_request(
            "invalid_request",
            90014,
            "The required field 'client_assertion_type' is missing from the credential. Ensure \
             that you have all the necessary parameters for the login request.",
        ));
    }
    let jwt = Jwt::parse(assertion).ok_or_else(|| {
        AadError::bad_request(
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        )
    })?;
    check_signature(emu, tenant, &app.client_id, &jwt)?;
    check_claims(emu, tenant, &app.client_id, &jwt)?;
    remember_jti(emu, &app.client_id, &jwt)?;
    Ok(app)
}

pub(crate) fn lookup(tenant: &Tenant, client_id: &str) -> Result<ClientApp, AadError> {
    let apps = tenant.apps();
    let app = apps
        .get(&client_id.to_lowercase())
        .ok_or_else(|| AadError::unknown_client(client_id, tenant))?;
    Ok(ClientApp {
        client_id: app.client_id.clone(),
        display_name: app.reg.display_name.clone(),
        permissions: app.reg.permissions.clone(),
        redirect_uris: app.reg.redirect_uris.clone(),
    })
}

fn missing_credential(form: &Form, client_id: &str) -> AadError {
    if form.contains_key("client_secret") {
        // The emulated apps have certificate credentials only, so any secret is wrong.
        return AadError::invalid_client(
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the \
             client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        );
    }
    AadError::invalid_client(
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

/// Which algorithm the header names, and which thumbprint it carries.
fn header_key(jwt: &Jwt) -> Result<(&'static RsaParameters, Vec<u8>), String> {
    let alg: &'static RsaParameters = match jwt.header_str("alg") {
        Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
        other => {
            return Err(format!(
                "The signature algorithm '{}' is not supported.",
                other.unwrap_or("")
            ));
        }
    };
    let thumb = jwt
        .header_str("x5t#S256")
        .or_else(|| jwt.header_str("x5t"))
        .and_then(b64url_decode)
        .unwrap_or_default();
    Ok((alg, thumb))
}

fn key_problem(
    reason: &str,
    thumb: &[u8],
    client_id: &str,
    found: Option<&CertRecord>,
) -> AadError {
    let found = found.map_or_else(String::new, |c| {
        format!(
            ", Found key 'Start={}, End={}'",
            c.info.not_before, c.info.not_after
        )
    });
    let lead = if reason.starts_with("The provided signature value") {
        "Client assertion failed signature validation."
    } else {
        "Client assertion contains an invalid signature."
    };
    AadError::invalid_client(
        700027,
        format!(
            "{lead} [Reason - {reason}, Thumbprint of key used by client: '{}'{found}, Please visit \
         the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app \
         Id '{client_id}'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments \
         to determine the corresponding service endpoint and \
         https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-1.0&tabs=http \
         to build a query request URL, such as 'https://graph.microsoft.com/beta/applications/{client_id}']",
            hex_upper(thumb)
        ),
    )
}

fn check_signature(
    emu: &Emulator,
    tenant: &Tenant,
    client_id: &str,
    jwt: &Jwt,
) -> Result<(), AadError> {
    let (alg, thumb) =
        header_key(jwt).map_err(|reason| key_problem(&reason, &[], client_id, None))?;
    let apps = tenant.apps();
    let certs = apps
        .get(&client_id.to_lowercase())
        .map_or(&[][..], |a| a.certs.as_slice());
    let Some(cert) = certs
        .iter()
        .find(|c| !thumb.is_empty() && (c.sha256 == thumb || c.sha1 == thumb))
    else {
        return Err(key_problem(
            "The key was not found.",
            &thumb,
            client_id,
            None,
        ));
    };
    let now = emu.inner.now();
    if now < cert.not_before {
        return Err(key_problem(
            "The key is not yet valid.",
            &thumb,
            client_id,
            Some(cert),
        ));
    }
    if now > cert.not_after {
        return Err(key_problem(
            "The key used is expired.",
            &thumb,
            client_id,
            Some(cert),
        ));
    }
    if !verify(alg, &cert.public_key, jwt) {
        let reason = "The provided signature value did not match the expected signature value.";
        return Err(key_problem(reason, &thumb, client_id, Some(cert)));
    }
    Ok(())
}

fn check_claims(
    emu: &Emulator,
    tenant: &Tenant,
    client_id: &str,
    jwt: &Jwt,
) -> Result<(), AadError> {
    let (iss, sub) = (
        jwt.claim_str("iss").unwrap_or(""),
        jwt.claim_str("sub").unwrap_or(""),
    );
    if iss != sub {
        return Err(AadError::invalid_client(
            50048,
            "Subject mismatches Issuer claim in the client assertion.",
        ));
    }
    if !iss.eq_ignore_ascii_case(client_id) {
        return Err(AadError::invalid_client(
            700021,
            format!(
                "Client assertion application identifier doesn't match 'client_id' parameter. {DOCS}"
            ),
        ));
    }
    let base = emu.inner.base();
    let aud = jwt.claim_str("aud").unwrap_or("");
    let accepted = [&tenant.id, &tenant.domain]
        .iter()
        .any(|t| aud.eq_ignore_ascii_case(&format!("{base}/{t}/oauth2/v2.0/token")));
    if !accepted {
        return Err(AadError::invalid_client(
            50012,
            format!(
                "Client assertion audience claim does not match Realm issuer. Audience '{aud}' is not \
             the token endpoint '{base}/{}/oauth2/v2.0/token'.",
                tenant.id
            ),
        ));
    }
    check_times(emu.inner.now(), jwt)
}

fn check_times(now: i64, jwt: &Jwt) -> Result<(), AadError> {
    let exp = jwt.claim_time("exp");
    let start = jwt.claim_time("nbf").or_else(|| jwt.claim_time("iat"));
    let range = |why: &str| {
        AadError::invalid_client(
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion \
             valid from {}, expiry time of assertion {}.{why} {DOCS}",
                iso(now),
                start.map_or_else(|| "-".into(), iso),
                exp.map_or_else(|| "-".into(), iso)
            ),
        )
    };
    let Some(exp) = exp else {
        return Err(range(" The 'exp' claim is missing."));
    };
    if exp + SKEW <= now {
        return Err(range(""));
    }
    if jwt.claim_time("nbf").is_some_and(|nbf| nbf > now + SKEW) {
        return Err(range(""));
    }
    if start.is_some_and(|s| exp - s > MAX_LIFETIME) {
        return Err(range(
            " The assertion must not be valid for more than 10 minutes.",
        ));
    }
    Ok(())
}

/// Rejects a `jti` already presented by this client (until the assertion would expire).
fn remember_jti(emu: &Emulator, client_id: &str, jwt: &Jwt) -> Result<(), AadError> {
    let Some(jti) = jwt.claim_str("jti").filter(|j| !j.is_empty()) else {
        return Err(AadError::invalid_client(
            50013,
            "Assertion is invalid because of various reasons: the 'jti' claim is missing.",
        ));
    };
    let now = emu.inner.now();
    let mut seen = lock(&emu.inner.jtis);
    seen.retain(|_, exp| *exp + SKEW > now);
    let key = format!("{}|{jti}", client_id.to_lowercase());
    if seen.contains_key(&key) {
        return Err(AadError::invalid_client(
            50013,
            format!(
                "Assertion is invalid because of various reasons: the assertion with jti '{jti}' \
             has already been used (replay)."
            ),
        ));
    }
    seen.insert(key, jwt.claim_time("exp").unwrap_or(now));
    Ok(())
}
