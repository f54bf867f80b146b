//! The tenant's certificate credential ("Generate New Key Pair"). An RSA key and a
//! self-signed X.509 certificate for it; the certificate is what the administrator uploads to
//! the Entra app registration as `public_key.pem`, the private key never leaves the gateway.
//!
//! One pair per SHA-1 thumbprint: the certificate and the pair's state are in the store, the
//! private key is sealed in the keyring ([`super::keys`]). A new pair is `pending` until it
//! has produced a successful token, and the previous `active` one keeps working meanwhile,
//! so regenerating never causes an outage.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_RSA_SHA256, RsaKeySize};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::error::OidcError;
use crate::encoding::hex_upper;
use crate::ids::TenantId;

/// RSA modulus sizes offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyBits {
    #[default]
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyBits {
    pub fn from_bits(bits: u32) -> Option<KeyBits> {
        match bits {
            2048 => Some(KeyBits::Rsa2048),
            3072 => Some(KeyBits::Rsa3072),
            4096 => Some(KeyBits::Rsa4096),
            _ => None,
        }
    }

    fn rcgen(self) -> RsaKeySize {
        match self {
            KeyBits::Rsa2048 => RsaKeySize::_2048,
            KeyBits::Rsa3072 => RsaKeySize::_3072,
            KeyBits::Rsa4096 => RsaKeySize::_4096,
        }
    }
}

/// Public facts about a certificate: what the admin page and the store show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Upper-case hex SHA-1 of the DER: what the Entra portal lists as "Thumbprint".
    pub thumbprint_sha1: String,
    /// Upper-case hex SHA-256 of the DER.
    pub thumbprint_sha256: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The `public_key.pem` contents (PEM `CERTIFICATE`).
    pub certificate_pem: String,
}

/// A loaded credential able to sign client assertions. The key stays out of `Debug`.
pub struct TenantCredential {
    pub info: CertificateInfo,
    cert_der: Vec<u8>,
    signing_key: EncodingKey,
}

impl fmt::Debug for TenantCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCredential")
            .field("thumbprint_sha1", &self.info.thumbprint_sha1)
            .field("not_after", &self.info.not_after)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl TenantCredential {
    /// `x5t`: base64url (no padding) of the certificate's SHA-1 digest.
    pub fn x5t(&self) -> String {
        URL_SAFE_NO_PAD.encode(sha1(&self.cert_der))
    }

    /// `x5t#S256`: base64url (no padding) of the certificate's SHA-256 digest.
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(sha256(&self.cert_der))
    }

    pub(crate) fn signing_key(&self) -> &EncodingKey {
        &self.signing_key
    }

    /// Builds a credential from PEM text (the stored certificate and the unsealed key).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<TenantCredential, OidcError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| OidcError::Crypto(format!("certificate PEM: {e}")))?;
        let info = certificate_info(&der, cert_pem)?;
        let signing_key = EncodingKey::from_rsa_pem(key_pem.as_bytes())
            .map_err(|e| OidcError::Crypto(format!("private key: {e}")))?;
        Ok(TenantCredential {
            info,
            cert_der: der.to_vec(),
            signing_key,
        })
    }
}

/// A freshly generated pair, before it is written anywhere.
pub struct GeneratedPair {
    pub info: CertificateInfo,
    key_pem: String,
}

impl GeneratedPair {
    /// The private key (PKCS#8 PEM), to be sealed in the keyring.
    pub(crate) fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The pair as a credential able to sign.
    #[cfg(test)]
    pub(crate) fn credential(&self) -> Result<TenantCredential, OidcError> {
        TenantCredential::from_pem(&self.info.certificate_pem, &self.key_pem)
    }
}

impl fmt::Debug for GeneratedPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedPair")
            .field("info", &self.info)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Generates an RSA key and a self-signed certificate naming the PBX tenant.
pub fn generate(
    tenant_id: &TenantId,
    tenant_name: &str,
    bits: KeyBits,
    valid_days: u32,
) -> Result<GeneratedPair, OidcError> {
    let crypto = |e: rcgen::Error| OidcError::Crypto(e.to_string());
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, bits.rcgen()).map_err(crypto)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("PBX tenant {tenant_name} ({tenant_id})"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ms365-gateway");
    let now = time::OffsetDateTime::now_utc();
    // A little back-dating absorbs clock skew between the gateway and Microsoft.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(valid_days));
    let cert = params.self_signed(&key).map_err(crypto)?;
    let pem = cert.pem();
    let info = certificate_info(cert.der(), &pem)?;
    Ok(GeneratedPair {
        info,
        key_pem: key.serialize_pem(),
    })
}

fn certificate_info(der: &[u8], pem: &str) -> Result<CertificateInfo, OidcError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| OidcError::Crypto(format!("certificate: {e}")))?;
    let validity = parsed.validity();
    Ok(CertificateInfo {
        thumbprint_sha1: hex_upper(&sha1(der)),
        thumbprint_sha256: hex_upper(&sha256(der)),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        certificate_pem: pem.to_string(),
    })
}

pub(crate) fn sha1(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .to_vec()
}

pub(crate) fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x5t` from the hex thumbprint the Entra portal shows.
    fn x5t_from_hex(hex: &str) -> Option<String> {
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect();
        bytes.map(|b| URL_SAFE_NO_PAD.encode(b))
    }

    #[test]
    fn microsofts_published_thumbprint_vector() {
        assert_eq!(
            x5t_from_hex("84E05C1D98BCE3A5421D225B140B36E86A3D5534").unwrap(),
            "hOBcHZi846VCHSJbFAs26Go9VTQ"
        );
    }

    #[test]
    fn generated_pair_is_a_year_long_rsa_certificate_with_consistent_thumbprints() {
        let pair = generate(
            &TenantId::from_static("acme"),
            "Acme Ltd",
            KeyBits::Rsa2048,
            365,
        )
        .unwrap();
        let info = &pair.info;
        assert!(
            info.certificate_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(info.thumbprint_sha1.len(), 40);
        assert_eq!(info.thumbprint_sha256.len(), 64);
        let days = (info.not_after - info.not_before) / 86_400;
        assert_eq!(days, 365, "validity in days");
        let cred = pair.credential().unwrap();
        assert_eq!(cred.x5t(), x5t_from_hex(&info.thumbprint_sha1).unwrap());
        assert_eq!(
            cred.x5t_s256(),
            x5t_from_hex(&info.thumbprint_sha256).unwrap()
        );
        let reloaded = TenantCredential::from_pem(&info.certificate_pem, pair.key_pem()).unwrap();
        assert_eq!(reloaded.info, cred.info);
        let debug = format!("{reloaded:?} {pair:?}");
        assert!(
            !debug.contains("PRIVATE KEY") && debug.contains("<redacted>"),
            "{debug}"
        );
        let (_, x509) = x509_parser::parse_x509_certificate(&reloaded.cert_der).unwrap();
        assert!(x509.subject().to_string().contains("Acme Ltd"));
    }
}
