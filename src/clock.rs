//! Wall-clock time as Unix seconds: the one time format the store, tokens and certificates
//! share. Kept below every other module so none of them reaches into the store for it.

/// Current time as Unix seconds (0 on a clock before 1970, which nothing here can use).
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
