//! What queued change notifications ask a run to read again, and their retries. The queue
//! holds words: `users`, `personal:{oid}`, `shared:{oid}`; a target queued again after a
//! failed run is `retry:{n}:{word}`, due later each time ([`retry_of`]), so a change that
//! arrived while Graph or the PBX was down reaches the PBX soon after they are back
//! instead of at the next scheduled run, and a lasting failure stops asking after
//! [`MAX_RETRIES`].

use crate::ids::ObjectId;
use std::collections::HashSet;

/// Retries of one queued target after failed runs.
pub const MAX_RETRIES: u32 = 5;
/// The first retry's delay; each next one doubles it (30 s … 8 min, ~15 min in all).
pub const FIRST_RETRY_MS: i64 = 30_000;
const RETRY_PREFIX: &str = "retry:";

/// What change notifications asked a run to read again. The users delta runs anyway: it is
/// one request from the stored deltaLink and tells which users' photos to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Users whose own contacts were notified.
    pub personal: HashSet<ObjectId>,
    /// Shared mailboxes whose contacts were notified.
    pub shared: HashSet<ObjectId>,
}

impl Targets {
    /// The targets of queued notification rows; unknown words are ignored.
    pub fn from_queue(queued: &[String]) -> Targets {
        let mut targets = Targets::default();
        for queued in queued {
            let (_, target) = attempt_of(queued);
            if let Some(oid) = target.strip_prefix("personal:") {
                targets.personal.insert(ObjectId::new(oid));
            } else if let Some(oid) = target.strip_prefix("shared:") {
                targets.shared.insert(ObjectId::new(oid));
            }
        }
        targets
    }
}

/// The queued word to queue again after a failed run, and when it is due (epoch ms);
/// `None` once it was retried [`MAX_RETRIES`] times.
pub fn retry_of(queued: &str, now_ms: i64) -> Option<(String, i64)> {
    let (attempt, target) = attempt_of(queued);
    if attempt >= MAX_RETRIES {
        return None;
    }
    let due = now_ms + (FIRST_RETRY_MS << attempt);
    Some((format!("{RETRY_PREFIX}{}:{target}", attempt + 1), due))
}

/// How often a queued word was retried already, and the word itself.
fn attempt_of(queued: &str) -> (u32, &str) {
    (queued.strip_prefix(RETRY_PREFIX))
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(n, target)| Some((n.parse().ok()?, target)))
        .unwrap_or((0, queued))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_targets_split_by_kind() {
        let queued = ["users", "personal:a", "shared:b", "personal:c", "bogus:d"].map(String::from);
        let t = Targets::from_queue(&queued);
        assert_eq!(t.personal.len(), 2);
        assert!(t.personal.contains("a") && t.personal.contains("c"));
        assert_eq!(
            t.shared.into_iter().collect::<Vec<_>>(),
            vec![ObjectId::new("b")]
        );
    }

    #[test]
    fn retried_targets_read_as_their_word() {
        let queued = ["retry:2:shared:b", "retry:1:users"].map(String::from);
        let t = Targets::from_queue(&queued);
        assert!(t.shared.contains("b") && t.personal.is_empty());
    }

    #[test]
    fn retries_back_off_and_stop() {
        let (word, due) = retry_of("shared:b", 1_000).unwrap();
        assert_eq!((word.as_str(), due), ("retry:1:shared:b", 31_000));
        let (word, due) = retry_of(&word, 1_000).unwrap();
        assert_eq!((word.as_str(), due), ("retry:2:shared:b", 61_000));
        let mut word = word;
        let mut delays = Vec::new();
        while let Some((next, due)) = retry_of(&word, 0) {
            delays.push(due);
            word = next;
        }
        assert_eq!(word, format!("retry:{MAX_RETRIES}:shared:b"));
        assert_eq!(delays, [120_000, 240_000, 480_000]);
    }
}
