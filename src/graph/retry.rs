//! How long to wait before retrying: Graph's `Retry-After` when it sent one (seconds, which
//! Graph may send fractional, or an HTTP-date), otherwise exponential backoff with full
//! jitter so that many workers throttled at the same moment do not come back in lockstep.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Longest server-requested wait honoured. Graph asks for seconds to a few minutes; a
/// larger value is a broken header, and waiting hours would stall the whole sync.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The `Retry-After` of an answer's headers.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, SystemTime::now())
}

/// Parses `Retry-After` as delay-seconds (fractional allowed) or an IMF-fixdate relative to
/// `now`. A date in the past means "now"; anything unparsable is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
    }
    // RFC 9110 asks recipients to read all three date forms; httpdate does.
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Full-jitter exponential backoff: uniform in `[0, min(max, base * 2^attempt)]`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(2u32.saturating_pow(attempt)).min(max);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn seconds_whole_and_fractional() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("100000", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770); // Sun, 06 Nov 1994 08:49:30 GMT
        let d = parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now);
        assert_eq!(d, Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now),
            None
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 CET", now),
            None
        );
        // The obsolete RFC 850 form, which RFC 9110 still asks recipients to read.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        for attempt in 0..40 {
            let d = backoff(base, max, attempt);
            let ceiling = base.saturating_mul(2u32.saturating_pow(attempt)).min(max);
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
        }
        assert!(backoff(base, max, 30) <= max);
    }
}
