//! End-to-end tests of the Graph client over real HTTP against scripted local servers
//! (`support`): retries and throttling, tokens, paging and delta, `$batch`, photos and
//! the per-mailbox limit.

pub(crate) mod support;

mod batch;
mod paging;
mod photos;
mod pipeline;
