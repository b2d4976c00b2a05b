//! What fills a message value after its 16-byte send-time header (`--payload`).
//!
//! The broker stores values as opaque bytes, so without compression their content changes nothing.
//! With compression it decides the result: a value of one repeated byte shrinks a hundredfold and
//! makes any codec look free. Three contents, so a compressed run can say what it measured:
//!
//! | payload    | content | ratio, 16 × 1 KiB (`payloads_compress_as_documented`) |
//! | ---------- | ------- | --------- |
//! | `constant` | the byte `x` repeated (the default; the cheapest to produce) | snappy 21×, lz4 180×, gzip 330×, zstd 860×: an upper bound, not a workload |
//! | `text`     | words of 2–10 lowercase letters from a fixed vocabulary of 1024, drawn with Zipf frequencies (s = 1, like words of a language), separated by spaces | gzip 3.0×, zstd 3.0×, snappy 2.2×, lz4 2.0× |
//! | `random`   | uniformly random bytes, fresh for every message | 1.0×: the codec's cost without its benefit |
//!
//! `text` and `random` are generated afresh for every message (a buffer reused across messages would
//! repeat inside a batch, and LZ-family codecs would find the repeats). The vocabulary comes from a
//! fixed seed, so every run and every producer writes the same kind of text.

use std::{fmt, str::FromStr};

use crate::{keys::ZipfSampler, packed::PackedBytes, partitioner::SplitMix64};

/// Words in the `text` vocabulary.
const VOCABULARY_WORDS: usize = 1024;
/// Word frequencies follow Zipf's law with this exponent, as words of natural language roughly do.
const WORD_ZIPF_EXPONENT: f64 = 1.0;
/// Bits of a random number that pick one word through [`Filler::word_table`]: 2^16 slots give even
/// the rarest of 1024 Zipf-distributed words (p ≈ 1/7700) a slot, and one u64 picks four words.
const WORD_INDEX_BITS: u32 = 16;
/// Shortest and longest vocabulary word.
const WORD_LETTERS_MIN: u64 = 2;
const WORD_LETTERS_MAX: u64 = 10;
/// Seed of the vocabulary: fixed, so every run writes the same language.
const VOCABULARY_SEED: u64 = 0x5eed_0f7e_57ab;

/// `--payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The byte `x` repeated.
    Constant,
    /// Words from a fixed vocabulary.
    Text,
    /// Random bytes.
    Random,
}

impl FromStr for Payload {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "constant" => Ok(Payload::Constant),
            "text" => Ok(Payload::Text),
            "random" => Ok(Payload::Random),
            other => Err(format!("`{other}`: use constant, text or random")),
        }
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Payload::Constant => "constant",
            Payload::Text => "text",
            Payload::Random => "random",
        })
    }
}

/// Produces the filler after each value's header; one per producer thread.
#[derive(Debug)]
pub struct Filler {
    payload: Payload,
    /// `constant`: the longest filler, sliced; `text`/`random`: this message's filler.
    buffer: Vec<u8>,
    /// `text`: the vocabulary.
    words: PackedBytes,
    /// `text`: slot → word index, each word holding slots in proportion to its Zipf probability,
    /// so a uniform random slot draws a word by its frequency in O(1).
    word_table: Vec<u16>,
}

impl Filler {
    /// A filler for values of up to `longest_bytes` filler bytes.
    pub fn new(payload: Payload, longest_bytes: usize) -> Filler {
        let (mut words, mut word_table) = (PackedBytes::default(), Vec::new());
        assert!(
            VOCABULARY_WORDS <= usize::from(u16::MAX),
            "word indexes fit the u16 table"
        );
        if payload == Payload::Text {
            let zipf = ZipfSampler::new(VOCABULARY_WORDS, WORD_ZIPF_EXPONENT);
            let slots = 1usize << WORD_INDEX_BITS;
            word_table = (0..slots)
                .map(|slot| {
                    let rank = zipf.rank((slot as f64 + 0.5) / slots as f64);
                    u16::try_from(rank).unwrap_or(u16::MAX)
                })
                .collect();
            let mut random = SplitMix64::new(VOCABULARY_SEED);
            words = PackedBytes::with_capacity(VOCABULARY_WORDS, 6);
            let mut word = Vec::new();
            for _ in 0..VOCABULARY_WORDS {
                let letters = WORD_LETTERS_MIN + random.below(WORD_LETTERS_MAX - WORD_LETTERS_MIN + 1);
                word.clear();
                for _ in 0..letters {
                    word.push(b'a' + u8::try_from(random.below(26)).unwrap_or(0));
                }
                words.push(&word);
            }
        }
        let buffer = match payload {
            Payload::Constant => vec![b'x'; longest_bytes],
            Payload::Text | Payload::Random => Vec::with_capacity(longest_bytes + WORD_LETTERS_MAX as usize + 1),
        };
        Filler {
            payload,
            buffer,
            words,
            word_table,
        }
    }

    /// `length` filler bytes for the next message.
    pub fn next(&mut self, length: usize, random: &mut SplitMix64) -> &[u8] {
        match self.payload {
            Payload::Constant => return self.buffer.get(..length).unwrap_or(&self.buffer),
            Payload::Random => {
                self.buffer.clear();
                while self.buffer.len() < length {
                    self.buffer.extend_from_slice(&random.next_u64().to_le_bytes());
                }
            }
            Payload::Text => {
                self.buffer.clear();
                'words: while self.buffer.len() < length {
                    let mut bits = random.next_u64();
                    for _ in 0..(u64::BITS / WORD_INDEX_BITS) {
                        let slot = usize::try_from(bits).unwrap_or(0) % self.word_table.len().max(1);
                        let index = usize::from(self.word_table.get(slot).copied().unwrap_or(0));
                        bits >>= WORD_INDEX_BITS;
                        self.buffer.extend_from_slice(self.words.get(index));
                        self.buffer.push(b' ');
                        if self.buffer.len() >= length {
                            break 'words;
                        }
                    }
                }
            }
        }
        self.buffer.truncate(length);
        assert_eq!(self.buffer.len(), length);
        &self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::{Compression, Compressor};

    #[test]
    fn payloads_parse_and_have_the_asked_length() {
        for payload in [Payload::Constant, Payload::Text, Payload::Random] {
            assert_eq!(payload.to_string().parse::<Payload>(), Ok(payload));
            let mut filler = Filler::new(payload, 2000);
            let mut random = SplitMix64::new(3);
            for length in [0, 1, 7, 8, 9, 100, 2000] {
                assert_eq!(filler.next(length, &mut random).len(), length, "{payload}");
            }
        }
        assert!("zeros".parse::<Payload>().is_err());
        let mut text = Filler::new(Payload::Text, 200);
        let sample = text.next(200, &mut SplitMix64::new(9)).to_vec();
        assert!(sample.iter().all(|b| b.is_ascii_lowercase() || *b == b' '));
        assert!(sample.split(|b| *b == b' ').filter(|w| !w.is_empty()).count() > 15);
        // Zipf frequencies: the commonest word is far more frequent than a uniform draw would make it.
        let mut filler = Filler::new(Payload::Text, 1 << 16);
        let long = filler.next(1 << 16, &mut SplitMix64::new(5)).to_vec();
        let mut counts = std::collections::BTreeMap::new();
        for word in long.split(|b| *b == b' ').filter(|w| !w.is_empty()) {
            *counts.entry(word.to_vec()).or_insert(0u32) += 1;
        }
        let total: u32 = counts.values().sum();
        let commonest = counts.values().copied().max().unwrap();
        assert!(f64::from(commonest) / f64::from(total) > 0.1, "{commonest} of {total}");
    }

    /// Ratio of 16 KiB of 1 KiB values to its compressed size, as the table above states it.
    fn ratio(payload: Payload, codec: Compression) -> f64 {
        let mut filler = Filler::new(payload, 1024);
        let mut random = SplitMix64::new(11);
        let mut batch = Vec::new();
        for _ in 0..16 {
            batch.extend_from_slice(filler.next(1024, &mut random));
        }
        let mut compressed = Vec::new();
        Compressor::new(codec)
            .unwrap()
            .compress_into(&batch, &mut compressed)
            .unwrap();
        batch.len() as f64 / compressed.len() as f64
    }

    #[test]
    fn payloads_compress_as_documented() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let constant = ratio(Payload::Constant, codec);
            let text = ratio(Payload::Text, codec);
            let random = ratio(Payload::Random, codec);
            assert!(constant > 15.0, "{codec}: constant {constant:.2}");
            assert!((1.5..4.0).contains(&text), "{codec}: text {text:.2}");
            assert!(random < 1.01, "{codec}: random {random:.3}");
        }
    }
}
