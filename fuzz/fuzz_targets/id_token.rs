//! The ID-token checks on arbitrary tokens: never a panic, never accepted (nothing here was
//! signed with the key's private half).
#![no_main]

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, DecodingKey};
use libfuzzer_sys::fuzz_target;
use ms365_gateway::entra::{IdTokenExpectations, validate_id_token_with_key};

/// An RSA public key (2048 bits) whose private half exists nowhere.
const MODULUS: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

fn key() -> &'static DecodingKey {
    static KEY: OnceLock<DecodingKey> = OnceLock::new();
    KEY.get_or_init(|| DecodingKey::from_rsa_components(MODULUS, "AQAB").unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let expect = IdTokenExpectations {
        issuer: "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
        client_id: "11111111-2222-3333-4444-555555555555",
        directory_id: "72f988bf-86f1-41af-91ab-2d7cd011db47",
        nonce: "n",
        algorithms: &[Algorithm::RS256, Algorithm::PS256],
    };
    assert!(validate_id_token_with_key(key(), token, &expect).is_err());
});
