//! The counter and latency histogram that every proxied request writes, kept in one shard
//! per edge worker. A `prometheus_client` counter is one atomic and its histogram one mutex,
//! which both workers wrote on every request: each write moved that cache line from one core
//! to the other. Here a worker writes only its own shard, and a scrape adds the shards up.
//!
//! Which shard a thread writes is [`crate::shard`]'s business.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::shard::{Padded, SHARDS, current as shard};

/// A monotonic counter, encoded as a Prometheus counter.
#[derive(Clone, Debug, Default)]
pub struct ShardedCounter(Arc<[Padded<AtomicU64>; SHARDS]>);

impl ShardedCounter {
    pub fn inc(&self) {
        self.0[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Latency buckets: 0.5 ms doubling up to about 65 s, then everything above.
const LATENCY_BOUNDS: usize = 18;
const BUCKETS: usize = LATENCY_BOUNDS + 1;

/// A histogram of durations in seconds over [`BUCKETS`] fixed buckets, encoded as a
/// Prometheus histogram.
#[derive(Clone, Debug)]
pub struct ShardedHistogram(Arc<HistogramShards>);

#[derive(Debug)]
struct HistogramShards {
    /// Upper bounds; the last is infinity (`+Inf`), as `prometheus_client` makes it.
    bounds: [f64; BUCKETS],
    shards: [Padded<HistogramShard>; SHARDS],
}

#[derive(Debug, Default)]
struct HistogramShard {
    /// An `f64`'s bits.
    sum: AtomicU64,
    /// Observations per bucket (not cumulative).
    buckets: [AtomicU64; BUCKETS],
}

impl ShardedHistogram {
    /// The request latency buckets.
    pub fn latency() -> Self {
        let mut bounds = [f64::INFINITY; BUCKETS];
        let mut bound = 0.0005;
        for b in bounds.iter_mut().take(LATENCY_BOUNDS) {
            *b = bound;
            bound *= 2.0;
        }
        ShardedHistogram(Arc::new(HistogramShards {
            bounds,
            shards: Default::default(),
        }))
    }

    pub fn observe(&self, v: f64) {
        let shard = &self.0.shards[shard()].0;
        // NaN is in no bucket's bounds: it goes to the last, as with `prometheus_client`.
        let bucket = (self.0.bounds.iter())
            .position(|bound| v <= *bound)
            .unwrap_or(BUCKETS - 1);
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // Only this thread writes this shard (but for shard 0), so the loop runs once.
        let _ = shard
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Sum, count and per-bucket counts over all shards. The count is the buckets' total,
    /// so a scrape during an observation never shows a count its buckets do not add up to.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.0.bounds.iter().map(|b| (*b, 0)).collect();
        let mut sum = 0.0;
        for shard in &self.0.shards {
            sum += f64::from_bits(shard.0.sum.load(Ordering::Relaxed));
            for (total, n) in buckets.iter_mut().zip(&shard.0.buckets) {
                total.1 += n.load(Ordering::Relaxed);
            }
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
    use prometheus_client::registry::Registry;

    use super::*;

    fn text(name: &str, metric: impl prometheus_client::registry::Metric) -> String {
        let mut registry = Registry::default();
        registry.register(name, "help", metric);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    /// Observations from several threads, edge workers and not, are all counted, and the
    /// text is the one `prometheus_client`'s own histogram gives for the same values.
    #[test]
    fn shards_add_up_to_what_one_histogram_shows() {
        let sharded = ShardedHistogram::latency();
        let plain = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        // Binary fractions, so the sums are exact whatever order the shards add them in.
        let values = [
            0.000244140625,
            0.0009765625,
            0.00390625,
            0.25,
            1.5,
            70.0,
            2048.0,
        ];
        std::thread::scope(|s| {
            for worker in [None, Some(0), Some(1), Some(9)] {
                let sharded = sharded.clone();
                s.spawn(move || {
                    if let Some(w) = worker {
                        crate::shard::enter(w);
                    }
                    values.iter().for_each(|v| sharded.observe(*v));
                });
            }
        });
        for _ in 0..4 {
            values.iter().for_each(|v| plain.observe(*v));
        }
        assert_eq!(text("latency", sharded), text("latency", plain));
    }

    #[test]
    fn bounds_and_nan_fall_where_prometheus_client_puts_them() {
        let sharded = ShardedHistogram::latency();
        let plain = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        for v in [0.0005, 0.001, 65.536, f64::INFINITY, f64::NAN] {
            sharded.observe(v);
            plain.observe(v);
        }
        assert_eq!(text("latency", sharded), text("latency", plain));
    }

    #[test]
    fn counter_shards_add_up() {
        let counter = ShardedCounter::default();
        std::thread::scope(|s| {
            for worker in 0..10 {
                let counter = counter.clone();
                s.spawn(move || {
                    crate::shard::enter(worker);
                    (0..100).for_each(|_| counter.inc());
                });
            }
        });
        counter.inc();
        assert_eq!(counter.get(), 1001);
        assert!(text("hits", counter).contains("hits_total 1001\n"));
    }
}
