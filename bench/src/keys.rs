//! Keyed workloads: the key space, how often each key is drawn (`--key-distribution`), where each
//! key lands (Kafka's default partitioner), and the spread a run actually produced.
//!
//! With `--keys N` the keys are `key-0` … `key-{N-1}`. `uniform` draws each with probability 1/N;
//! `zipf:S` draws the key of rank r (`key-{r-1}`, so `key-0` is the hottest) with probability
//! proportional to 1/r^S, the skew of real key popularity (a few hot users, products, devices, and a
//! long tail). Each key's partition is fixed by [`partition_for_key`] (murmur2, as the Java client
//! and librdkafka's `murmur2_random` partitioner choose), so a skewed key distribution becomes a
//! skewed partition load exactly as it would with a real client, and results compare.

use std::{fmt, str::FromStr};

use serde_json::{json, Value};

use crate::{
    packed::PackedBytes,
    partitioner::{partition_for_key, SplitMix64},
};

/// Largest Zipf exponent: at 10 the hottest key already takes > 99.9 % of the draws.
pub const ZIPF_EXPONENT_MAX: f64 = 10.0;
/// Keys listed by name in the spread report, hottest first.
pub const HOTTEST_KEYS_REPORTED: usize = 10;

/// `--key-distribution`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Key of rank r drawn with probability ∝ 1/r^exponent.
    Zipf {
        /// The exponent S (> 0; 1 is the classic Zipf law).
        exponent: f64,
    },
}

impl FromStr for KeyDistribution {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "uniform" {
            return Ok(KeyDistribution::Uniform);
        }
        let exponent = match text.strip_prefix("zipf") {
            Some("") => 1.0,
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|number| number.parse::<f64>().ok())
                .ok_or_else(|| format!("`{text}`: use zipf:S with a number S, e.g. zipf:1.1"))?,
            None => return Err(format!("`{text}`: use uniform or zipf:S (e.g. zipf:1.1)")),
        };
        if !(exponent > 0.0 && exponent <= ZIPF_EXPONENT_MAX) {
            return Err(format!(
                "zipf exponent {exponent} must be above 0 and at most {ZIPF_EXPONENT_MAX}"
            ));
        }
        Ok(KeyDistribution::Zipf { exponent })
    }
}

impl fmt::Display for KeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDistribution::Uniform => f.write_str("uniform"),
            KeyDistribution::Zipf { exponent } => write!(f, "zipf:{exponent}"),
        }
    }
}

/// Draws ranks 0..n (rank 0 the most likely) with probability ∝ 1/(rank+1)^s, by inverting the
/// cumulative distribution with a binary search: exact, O(log n) per draw, n doubles of memory.
#[derive(Debug, Clone)]
pub struct ZipfSampler {
    /// `cumulative[r]` = P(rank ≤ r); non-decreasing, the last is exactly 1.
    cumulative: Vec<f64>,
}

impl ZipfSampler {
    /// A sampler over `n` ranks (n ≥ 1) with exponent `exponent` (> 0).
    ///
    /// # Panics
    /// If `n` is 0 or the exponent is not positive and finite (the flag parser rules both out).
    pub fn new(n: usize, exponent: f64) -> ZipfSampler {
        assert!(n > 0, "a Zipf sampler needs at least one rank");
        assert!(exponent > 0.0 && exponent.is_finite(), "Zipf exponent {exponent}");
        let mut cumulative = Vec::with_capacity(n);
        let mut sum = 0.0f64;
        for rank in 1..=n {
            sum += (rank as f64).powf(-exponent);
            cumulative.push(sum);
        }
        for value in &mut cumulative {
            *value /= sum;
        }
        if let Some(last) = cumulative.last_mut() {
            *last = 1.0; // rounding must not leave a gap above the last rank
        }
        assert!(cumulative.windows(2).all(|pair| matches!(pair, [a, b] if a <= b)));
        ZipfSampler { cumulative }
    }

    /// The rank for a uniform draw `unit` in [0, 1).
    pub fn rank(&self, unit: f64) -> usize {
        let rank = self.cumulative.partition_point(|&p| p <= unit);
        rank.min(self.cumulative.len() - 1)
    }

    /// The probability of `rank`.
    #[cfg(test)]
    pub fn probability(&self, rank: usize) -> f64 {
        let below = rank.checked_sub(1).and_then(|r| self.cumulative.get(r)).copied();
        self.cumulative.get(rank).copied().unwrap_or(0.0) - below.unwrap_or(0.0)
    }
}

/// A uniform double in [0, 1) from 53 random bits.
pub fn unit_interval(random: &mut SplitMix64) -> f64 {
    (random.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The keys of a run, each with its partition, and how they are drawn. Built once and shared by
/// every producer.
#[derive(Debug)]
pub struct KeySpace {
    /// Every key's bytes.
    names: PackedBytes,
    /// Partition index of key i.
    partitions: Vec<usize>,
    distribution: KeyDistribution,
    zipf: Option<ZipfSampler>,
}

impl KeySpace {
    /// `count` keys over `partition_count` partitions, drawn by `distribution`.
    ///
    /// # Panics
    /// If `count` is 0 (a run without keys has no key space).
    pub fn new(count: usize, distribution: KeyDistribution, partition_count: usize) -> KeySpace {
        assert!(count > 0, "a key space needs at least one key");
        let mut names = PackedBytes::with_capacity(count, 10);
        let mut partitions = Vec::with_capacity(count);
        for index in 0..count {
            let name = names.push(format!("key-{index}").as_bytes());
            partitions.push(partition_for_key(name, partition_count));
        }
        let zipf = match distribution {
            KeyDistribution::Uniform => None,
            KeyDistribution::Zipf { exponent } => Some(ZipfSampler::new(count, exponent)),
        };
        KeySpace {
            names,
            partitions,
            distribution,
            zipf,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Draws a key index.
    pub fn pick(&self, random: &mut SplitMix64) -> usize {
        let index = match &self.zipf {
            None => usize::try_from(random.below(self.len() as u64)).unwrap_or(0),
            Some(zipf) => zipf.rank(unit_interval(random)),
        };
        assert!(index < self.len());
        index
    }

    /// Key `index`'s bytes.
    pub fn name(&self, index: usize) -> &[u8] {
        self.names.get(index)
    }

    /// Key `index`'s partition index.
    pub fn partition(&self, index: usize) -> usize {
        self.partitions.get(index).copied().unwrap_or(0)
    }

    /// The distribution keys are drawn from.
    pub fn distribution(&self) -> KeyDistribution {
        self.distribution
    }
}

/// Messages sent per key and per partition, counted by each producer and added up at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpreadCounts {
    /// Messages per key index (empty without keys).
    pub per_key: Vec<u64>,
    /// Messages per partition index.
    pub per_partition: Vec<u64>,
}

impl SpreadCounts {
    /// Zeroed counters for `keys` keys and `partitions` partitions.
    pub fn new(keys: usize, partitions: usize) -> SpreadCounts {
        SpreadCounts {
            per_key: vec![0; keys],
            per_partition: vec![0; partitions],
        }
    }

    /// Counts one message of key `key` (if any) on partition `partition`.
    pub fn count(&mut self, key: Option<usize>, partition: usize) {
        if let Some(slot) = key.and_then(|key| self.per_key.get_mut(key)) {
            *slot += 1;
        }
        if let Some(slot) = self.per_partition.get_mut(partition) {
            *slot += 1;
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &SpreadCounts) {
        for (vector, more) in [
            (&mut self.per_key, &other.per_key),
            (&mut self.per_partition, &other.per_partition),
        ] {
            if vector.len() < more.len() {
                vector.resize(more.len(), 0);
            }
            for (slot, add) in vector.iter_mut().zip(more) {
                *slot += add;
            }
        }
    }

    /// The spread of the counted messages over keys and partitions; `None` without keys.
    pub fn key_spread(&self) -> Option<KeySpread> {
        if self.per_key.is_empty() {
            return None;
        }
        let messages: u64 = self.per_key.iter().sum();
        let mut ranked: Vec<(usize, u64)> = self.per_key.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let one_percent = self.per_key.len().div_ceil(100);
        let partition_max = self.per_partition.iter().copied().max().unwrap_or(0);
        let partition_mean = messages as f64 / self.per_partition.len().max(1) as f64;
        Some(KeySpread {
            messages,
            distinct_sent: self.per_key.iter().filter(|&&count| count > 0).count(),
            top_one_percent_messages: ranked.iter().take(one_percent).map(|&(_, count)| count).sum(),
            hottest: ranked.into_iter().take(HOTTEST_KEYS_REPORTED).collect(),
            per_partition: self.per_partition.clone(),
            partition_max_over_mean: (partition_mean > 0.0).then(|| partition_max as f64 / partition_mean),
        })
    }
}

/// How a run's messages spread over its keys and partitions.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpread {
    /// Messages counted.
    pub messages: u64,
    /// Keys that carried at least one message.
    pub distinct_sent: usize,
    /// Messages of the hottest 1 % of keys (at least one key).
    pub top_one_percent_messages: u64,
    /// The [`HOTTEST_KEYS_REPORTED`] busiest keys, (key index, messages), busiest first.
    pub hottest: Vec<(usize, u64)>,
    /// Messages per partition index.
    pub per_partition: Vec<u64>,
    /// The busiest partition's messages over the mean per partition (1 is perfectly even).
    pub partition_max_over_mean: Option<f64>,
}

impl KeySpread {
    /// `count` as a share of all messages.
    pub fn share(&self, count: u64) -> f64 {
        if self.messages == 0 {
            0.0
        } else {
            count as f64 / self.messages as f64
        }
    }

    /// The report's `keys` object; `partition_ids` maps partition indexes to ids.
    pub fn to_json(&self, keys: &KeySpace, partition_ids: &[i32]) -> Value {
        let hottest: Vec<Value> = self
            .hottest
            .iter()
            .map(|&(index, count)| {
                json!({
                    "key": String::from_utf8_lossy(keys.name(index)),
                    "messages": count,
                    "share": self.share(count),
                    "partition": partition_ids.get(keys.partition(index)),
                })
            })
            .collect();
        let partitions: Vec<Value> = self
            .per_partition
            .iter()
            .enumerate()
            .map(|(index, &count)| {
                json!({"partition": partition_ids.get(index), "messages": count, "share": self.share(count)})
            })
            .collect();
        json!({
            "count": keys.len(),
            "distribution": keys.distribution().to_string(),
            "messages": self.messages,
            "distinct_sent": self.distinct_sent,
            "hottest": hottest,
            "top_1_percent_keys_share": self.share(self.top_one_percent_messages),
            "partitions": partitions,
            "partition_max_over_mean": self.partition_max_over_mean,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_parse() {
        assert_eq!("uniform".parse::<KeyDistribution>(), Ok(KeyDistribution::Uniform));
        assert_eq!("zipf:1.1".parse(), Ok(KeyDistribution::Zipf { exponent: 1.1 }));
        assert_eq!("zipf".parse(), Ok(KeyDistribution::Zipf { exponent: 1.0 }));
        assert_eq!(KeyDistribution::Zipf { exponent: 0.8 }.to_string(), "zipf:0.8");
        for bad in ["zipf:0", "zipf:-1", "zipf:11", "zipf:x", "zipf1", "normal", "zipf:NaN"] {
            assert!(bad.parse::<KeyDistribution>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zipf_probabilities_follow_the_law() {
        let sampler = ZipfSampler::new(100, 1.0);
        let harmonic: f64 = (1..=100).map(|r| 1.0 / r as f64).sum();
        for rank in [0usize, 1, 9, 99] {
            let expected = 1.0 / ((rank + 1) as f64 * harmonic);
            assert!((sampler.probability(rank) - expected).abs() < 1e-12, "rank {rank}");
        }
        assert_eq!(sampler.rank(0.0), 0);
        assert_eq!(sampler.rank(0.999_999_999), 99);
        // A single rank takes every draw.
        let single = ZipfSampler::new(1, 2.0);
        assert_eq!(single.rank(0.0), 0);
        assert_eq!(single.rank(0.999), 0);
    }

    /// 200 000 draws over 50 keys: every rank's frequency within 5 standard deviations of its
    /// probability, and a chi-square far below what a wrong distribution gives.
    #[test]
    fn zipf_sampler_draws_the_distribution() {
        for exponent in [0.5, 1.0, 1.5] {
            let keys = 50;
            let draws = 200_000u32;
            let sampler = ZipfSampler::new(keys, exponent);
            let mut random = SplitMix64::new(42);
            let mut counts = vec![0u32; keys];
            for _ in 0..draws {
                counts[sampler.rank(unit_interval(&mut random))] += 1;
            }
            let mut chi_square = 0.0;
            for (rank, &count) in counts.iter().enumerate() {
                let p = sampler.probability(rank);
                let expected = p * f64::from(draws);
                let sigma = (expected * (1.0 - p)).sqrt();
                assert!(
                    (f64::from(count) - expected).abs() < 5.0 * sigma + 1.0,
                    "s={exponent} rank {rank}: {count} vs {expected:.0}"
                );
                chi_square += (f64::from(count) - expected).powi(2) / expected;
            }
            // 49 degrees of freedom: the 99.9th percentile of chi-square is about 86.
            assert!(chi_square < 86.0, "s={exponent}: chi-square {chi_square:.1}");
            assert!(counts.windows(2).take(5).all(|pair| pair[0] > pair[1]), "{counts:?}");
        }
    }

    #[test]
    fn key_space_names_partitions_and_draws() {
        let space = KeySpace::new(1000, KeyDistribution::Uniform, 6);
        assert_eq!(space.len(), 1000);
        assert_eq!(space.name(0), b"key-0");
        assert_eq!(space.name(999), b"key-999");
        for index in [0, 17, 999] {
            assert_eq!(space.partition(index), partition_for_key(space.name(index), 6));
        }
        let mut random = SplitMix64::new(1);
        let mut seen = vec![false; 1000];
        for _ in 0..20_000 {
            seen[space.pick(&mut random)] = true;
        }
        assert!(seen.iter().all(|&s| s), "uniform draws reach every key");

        let skewed = KeySpace::new(1000, KeyDistribution::Zipf { exponent: 1.2 }, 6);
        let mut hits = 0;
        for _ in 0..10_000 {
            hits += usize::from(skewed.pick(&mut random) == 0);
        }
        // P(rank 0) = 1 / sum(r^-1.2) ≈ 0.22 for 1000 keys.
        assert!((1900..2500).contains(&hits), "key-0 drawn {hits} times of 10 000");
    }

    #[test]
    fn spread_report_counts_and_ranks() {
        let space = KeySpace::new(3, KeyDistribution::Zipf { exponent: 1.0 }, 2);
        let mut first = SpreadCounts::new(3, 2);
        let mut second = SpreadCounts::new(3, 2);
        for _ in 0..6 {
            first.count(Some(0), space.partition(0));
        }
        for _ in 0..2 {
            second.count(Some(2), space.partition(2));
        }
        first.merge(&second);
        assert_eq!(first.per_key, [6, 0, 2]);
        assert_eq!(first.per_partition.iter().sum::<u64>(), 8);
        let spread = first.key_spread().unwrap();
        assert_eq!(spread.hottest, [(0, 6), (2, 2), (1, 0)]);
        assert_eq!(spread.distinct_sent, 2);
        let json = spread.to_json(&space, &[10, 11]);
        assert_eq!(json["messages"], 8);
        assert_eq!(json["distinct_sent"], 2);
        assert_eq!(json["distribution"], "zipf:1");
        assert_eq!(json["hottest"][0]["key"], "key-0");
        assert_eq!(json["hottest"][0]["share"], 0.75);
        assert_eq!(json["hottest"][1]["key"], "key-2");
        assert_eq!(json["hottest"][2]["messages"], 0);
        assert_eq!(json["top_1_percent_keys_share"], 0.75);
        let partition_of_key_0 = json["hottest"][0]["partition"].as_i64().unwrap();
        assert!(partition_of_key_0 == 10 || partition_of_key_0 == 11);
        assert!(SpreadCounts::new(0, 2).key_spread().is_none());
    }
}
