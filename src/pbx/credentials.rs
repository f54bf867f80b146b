//! Random secrets for the PBX users the gateway creates: the login password (kept sealed,
//! so the gateway can later sign the user in to the PBX), the SIP extension password and
//! the voicemail PIN (not kept: the user sets their own on the phone or in the portal).
//! PortSIP's PIN rules: 6–10 digits, no digit three times in a row ("111"), no three
//! consecutive digits up or down ("012", "987").

use crate::ids::TenantId;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

const LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
const SYMBOLS: &[u8] = b"-_.!";

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random source works");
    buf
}

/// `n` characters drawn from `alphabet` without modulo bias.
fn draw(alphabet: &[u8], n: usize) -> String {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes(n * 2) {
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// Keyring name of the PBX login password the gateway set for one of its users (`local_id`
/// is the user's id in the gateway's record): written by the connector when it creates the
/// user, read at the user's Microsoft sign-in to open their own PBX session.
pub fn user_password_secret(tenant_id: &TenantId, local_id: &str) -> String {
    format!("pbx-user-password/{tenant_id}/{local_id}")
}

/// A 24-character login password: letters, digits and a symbol (about 140 bits).
pub fn generate_password() -> String {
    let mut p = draw(LETTERS, 22);
    p.push(SYMBOLS[random_bytes(1)[0] as usize % SYMBOLS.len()] as char);
    p.push_str(&draw(b"23456789", 1));
    p
}

/// A 20-character SIP password of letters and digits (SIP clients mangle symbols).
pub fn generate_extension_password() -> String {
    draw(LETTERS, 20)
}

/// An 8-digit voicemail PIN that meets PortSIP's rules.
pub fn generate_voicemail_pin() -> String {
    loop {
        let pin = draw(b"0123456789", 8);
        if is_valid_voicemail_pin(&pin) {
            return pin;
        }
    }
}

/// PortSIP's voicemail PIN rules.
pub fn is_valid_voicemail_pin(pin: &str) -> bool {
    let d: Vec<i8> = pin.bytes().map(|b| b as i8 - b'0' as i8).collect();
    (6..=10).contains(&d.len())
        && d.iter().all(|x| (0..=9).contains(x))
        && d.windows(3).all(|w| {
            let (a, b) = (w[1] - w[0], w[2] - w[1]);
            !(a == b && (a == 0 || a == 1 || a == -1))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_follow_portsips_rules() {
        for bad in [
            "111234",
            "012794",
            "987134",
            "12345",
            "12345678901",
            "12a456",
            "90876",
        ] {
            assert!(!is_valid_voicemail_pin(bad), "{bad}");
        }
        for good in ["135792", "1029384756", "202020"] {
            assert!(is_valid_voicemail_pin(good), "{good}");
        }
        for bad in ["111", "012", "987", "789", "1234567890", "5432100000"] {
            assert!(!is_valid_voicemail_pin(bad), "{bad}");
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let pin = generate_voicemail_pin();
            assert!(is_valid_voicemail_pin(&pin), "{pin}");
            seen.insert(pin);
        }
        assert!(seen.len() > 9_900, "PINs repeat too often: {}", seen.len());
    }

    /// Every 6-digit PIN against the rules written out the long way.
    #[test]
    fn every_six_digit_pin_is_judged_as_the_rules_say() {
        fn by_the_letter(pin: &[u8]) -> bool {
            !pin.windows(3).any(|w| {
                let (a, b, c) = (w[0] as i32, w[1] as i32, w[2] as i32);
                let equal = a == b && b == c;
                let up = b == a + 1 && c == b + 1;
                let down = b == a - 1 && c == b - 1;
                equal || up || down
            })
        }
        let mut valid = 0;
        for n in 0..1_000_000 {
            let pin = format!("{n:06}");
            let expected = by_the_letter(pin.as_bytes());
            assert_eq!(is_valid_voicemail_pin(&pin), expected, "{pin}");
            valid += usize::from(expected);
        }
        assert!((600_000..1_000_000).contains(&valid), "{valid}");
    }

    #[test]
    fn passwords_are_long_random_and_differ() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.chars().count(), 24);
        assert_ne!(a, b);
        assert!(a.chars().any(|c| SYMBOLS.contains(&(c as u8))));
        let sip = generate_extension_password();
        assert!(sip.len() == 20 && sip.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
