//! Which shard the calling thread writes. What every proxied request records (the request
//! metrics, the access log's buffer) is split into shards so that the edge workers never
//! write the same cache line: each worker writes its own shard, set when the worker starts
//! ([`enter`]); every other thread shares shard 0. More workers than shards share shards,
//! which stays correct and only brings the sharing back.

use std::cell::Cell;

/// Shards per sharded value: shard 0 for threads outside the edge, the rest for edge workers.
pub const SHARDS: usize = 8;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread, edge worker `worker`, write a shard of its own.
pub fn enter(worker: usize) {
    SHARD.with(|s| s.set(1 + worker % (SHARDS - 1)));
}

/// The calling thread's shard, below [`SHARDS`].
pub fn current() -> usize {
    SHARD.with(Cell::get)
}

/// A value on cache lines of its own: 128 bytes, since adjacent lines are fetched together.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_shards_of_their_own_and_others_share_the_first() {
        assert_eq!(current(), 0);
        let shards: Vec<usize> = (0..8)
            .map(|worker| {
                std::thread::spawn(move || {
                    enter(worker);
                    current()
                })
                .join()
                .unwrap()
            })
            .collect();
        assert_eq!(shards, [1, 2, 3, 4, 5, 6, 7, 1]);
        assert_eq!(std::mem::align_of::<Padded<u8>>(), 128);
    }
}
