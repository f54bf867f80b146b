//! The rules PortSIP states in prose, which its OpenAPI schema only describes: usernames
//! (letters, digits, `_ - ' .`, no leading or trailing period, four reserved names),
//! voicemail PINs (6–10 digits, no "111", no "012" or "987"), and extension numbers
//! (digits only, 3–64; the schema's unanchored pattern would let "ext-123" through).
//! Each check answers `None` when the value is valid, or what is wrong with it.

/// Names PortSIP keeps for the system administrator, compared without case.
const RESERVED_NAMES: [&str; 4] = ["admin", "system", "administrator", "root"];

/// PortSIP's username rule.
pub(crate) fn username_problem(name: &str) -> Option<&'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-'.".contains(c);
    if name.is_empty() {
        return Some("must not be empty");
    }
    if !name.chars().all(allowed) {
        return Some("may only hold letters, digits, _ - ' and .");
    }
    if name.starts_with('.') || name.ends_with('.') {
        return Some("must not start or end with a period");
    }
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Some("is reserved for the system administrator");
    }
    None
}

/// PortSIP's voicemail PIN rule.
pub(crate) fn pin_problem(pin: &str) -> Option<&'static str> {
    if !(6..=10).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Some("must be 6-10 digits");
    }
    let digits: Vec<i8> = pin.bytes().map(|b| (b - b'0') as i8).collect();
    // Three equal digits step by 0, a run up or down steps by +1 or -1 twice.
    let weak = digits.windows(3).any(|w| {
        let (first, second) = (w[1] - w[0], w[2] - w[1]);
        first == second && first.abs() <= 1
    });
    weak.then_some("must not hold three equal digits (111) or three in a row (012, 987)")
}

/// PortSIP's extension number rule.
pub(crate) fn extension_problem(number: &str) -> Option<&'static str> {
    let digits = number.bytes().all(|b| b.is_ascii_digit());
    (!digits || !(3..=64).contains(&number.len())).then_some("must be 3-64 digits, digits only")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["ann", "o'brien", "j.doe", "a_b-c", "Admin2", "x"] {
            assert_eq!(username_problem(ok), None, "{ok}");
        }
        for bad in [
            ".ann", "ann.", "an n", "ann@x", "ADMIN", "Root", "system", "", "zoë",
        ] {
            assert!(username_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn voicemail_pins() {
        for ok in ["135792", "1357913579", "102938", "998877", "130240"] {
            assert_eq!(pin_problem(ok), None, "{ok}");
        }
        for bad in [
            "13579",
            "13579135791",
            "111357",
            "135012",
            "139870",
            "975432",
            "13a579",
        ] {
            assert!(pin_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn extension_numbers() {
        assert_eq!(extension_problem("101"), None);
        assert_eq!(extension_problem(&"9".repeat(64)), None);
        for bad in ["12", "ext-123", "１２３", "123 ", &"9".repeat(65)] {
            assert!(extension_problem(bad).is_some(), "{bad}");
        }
    }
}
