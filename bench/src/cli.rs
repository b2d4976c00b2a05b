//! Command-line flags, their parsers and their bounds.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use clap::Parser;
use serde_json::{json, Value};

use crate::{batch::ValueHeader, compression::Compression, error::BenchError, keys::KeyDistribution, payload::Payload};

/// Most producer threads (each also runs one reader thread per broker).
pub const PRODUCERS_MAX: u32 = 256;
/// Most consumer threads.
pub const CONSUMERS_MAX: u32 = 256;
/// Largest message value. Far above any realistic benchmark, far below Kafka's 1 MiB default
/// `max.message.bytes` plus batch overhead.
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Largest `--batch-bytes`: Kafka's default `max.request.size` is 1 MiB; 16 MiB leaves room.
pub const BATCH_BYTES_MAX: usize = 16 << 20;
/// Longest `--linger-ms`.
pub const LINGER_MS_MAX: u64 = 10_000;
/// Most distinct keys (kept once, with their partition, in memory shared by the producers).
pub const KEYS_MAX: u64 = 1_000_000;
/// Most per-key counters over all producers (`--producers` × `--keys`): each producer counts its
/// messages per key for the spread report, 8 bytes a key, so this bounds them at 128 MiB.
pub const KEY_COUNTERS_MAX: u64 = 16 << 20;
/// Most messages `--prefill` writes (a billion 1 KiB messages is a terabyte; the fill is also
/// bounded in time by `PREFILL_TIME_MAX`).
pub const PREFILL_MESSAGES_MAX: u64 = 1_000_000_000;
/// Most partitions `--partitions` may create.
pub const PARTITIONS_MAX: i32 = 10_000;
/// Highest `--rate` (messages/s over all producers).
pub const RATE_MAX: u64 = 100_000_000;
/// Longest `--duration` and `--warmup`.
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

/// `bench`: open-loop Kafka load and latency.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bench",
    version,
    about = "Open-loop Kafka load and latency: publish and end-to-end latency from each message's intended send time",
    after_help = "Workload: --producers N --consumers 0 is produce only, --producers 0 --consumers N consume only, \
                  both non-zero is produce + consume end to end; --prefill M --consumers N fills the topic with M \
                  messages (untimed, by --producers threads) and then measures the consumers reading them. \
                  See docs/bench.md."
)]
pub struct Args {
    /// The protocol to load the broker with: `kafka`, or `mqtt` (MQTT 3.1.1: --producers publishers and
    /// --consumers subscribers of --topic on the first of --brokers; see docs/bench.md).
    #[arg(long, default_value = "kafka")]
    pub protocol: Protocol,

    /// With --protocol mqtt: the QoS of publications and subscriptions, 0 or 1.
    #[arg(long, default_value_t = 0)]
    pub qos: u8,

    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:9092")]
    pub brokers: Vec<String>,

    /// Topic to produce to and consume from.
    #[arg(long, default_value = "bench")]
    pub topic: String,

    /// Create the topic with this many partitions (CreateTopics) if it does not exist. Without it
    /// the topic must exist; an existing topic keeps its own partition count.
    #[arg(long)]
    pub partitions: Option<i32>,

    /// Producer threads, one connection each per partition leader.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,

    /// Consumer threads; partitions are dealt out among them.
    #[arg(long, default_value_t = 0)]
    pub consumers: u32,

    /// Value size in bytes: fixed (`1024`) or a uniform range (`100..1000`, both ends included).
    /// At least 16: the first 16 bytes carry the send time.
    #[arg(long, default_value = "1024")]
    pub message_size: MessageSize,

    /// A partition's batch is sent when it reaches this many bytes (Kafka's `batch.size`).
    #[arg(long, default_value_t = 16384)]
    pub batch_bytes: usize,

    /// ... or when its first message has waited this long (Kafka's `linger.ms`).
    #[arg(long, default_value_t = 1)]
    pub linger_ms: u64,

    /// Acknowledgements: `all` (or -1), `1` or `0` (no response: publish latency then ends when the
    /// request is written).
    #[arg(long, default_value = "all", allow_negative_numbers = true)]
    pub acks: Acks,

    /// Batch compression: `none`, `gzip`, `snappy`, `lz4` or `zstd`, written as Kafka specifies
    /// (records section compressed, codec in the attributes). `--batch-bytes` counts uncompressed
    /// bytes. Consumers decompress whatever they read, whatever this flag says.
    #[arg(long, default_value = "none")]
    pub compression: Compression,

    /// Value content after the 16-byte header: `constant` (one repeated byte; compresses to almost
    /// nothing), `text` (random words from a fixed vocabulary; compresses like log lines) or
    /// `random` (incompressible). Matters only with --compression.
    #[arg(long, default_value = "constant")]
    pub payload: Payload,

    /// Distinct message keys (`key-0` … `key-{N-1}`), partitioned with Kafka's murmur2 like the Java
    /// client and librdkafka's murmur2_random. 0: no keys, messages go round-robin over partitions.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,

    /// How keys are drawn: `uniform`, or `zipf:S` (key of rank r with probability ∝ 1/r^S, `key-0`
    /// the hottest; `zipf` alone is S = 1). Needs --keys.
    #[arg(long, default_value = "uniform")]
    pub key_distribution: KeyDistribution,

    /// Before measuring, fill the topic with this many messages (not timed; --producers threads at
    /// full speed, with --message-size, --keys, --compression, --payload, --batch-bytes, --acks),
    /// then measure only the consumers reading them back from hot data: msg/s, MB/s and Fetch
    /// latency. The run ends when all are read (or at --duration). Needs --consumers; --rate is
    /// not used.
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,

    /// Messages per second over all producers, on an open-loop schedule. 0: as fast as possible
    /// (latency is then a service time, not an open-loop figure).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,

    /// Measured time after warm-up (`10s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Warm-up before measuring; its messages are sent but not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Where consumers start: `latest` (only what this run produces) or `earliest` (read the backlog).
    #[arg(long, default_value = "latest")]
    pub consume_from: ConsumeFrom,

    /// Connect with TLS (1.2 or 1.3), trusting the certificate authorities in this PEM file; the
    /// brokers' certificates must name the host of each address (`127.0.0.1` included).
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// Write the full result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Before the load, measure write + fdatasync latency (4 KiB and 64 KiB) in DIR (default: the
    /// current directory; point it at the broker's data disk).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    pub fsync_probe: Option<PathBuf>,

    /// Broker version, recorded in the JSON as given.
    #[arg(long)]
    pub broker_version: Option<String>,

    /// Broker shard count, recorded in the JSON as given.
    #[arg(long)]
    pub shards: Option<u32>,

    /// Broker fsync mode (`always`, `never`, `interval:MS`, …), recorded in the JSON as given.
    #[arg(long)]
    pub fsync: Option<String>,

    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// Checks bounds clap cannot express.
    pub fn validate(&self) -> Result<(), BenchError> {
        let usage = |message: String| Err(BenchError::Usage(message));
        if self.brokers.iter().all(|b| b.trim().is_empty()) {
            return usage("--brokers lists no broker".into());
        }
        if self.topic.is_empty() || self.topic.len() > 249 {
            return usage("--topic must be 1 to 249 characters".into());
        }
        if let Some(partitions) = self.partitions {
            if !(1..=PARTITIONS_MAX).contains(&partitions) {
                return usage(format!("--partitions must be 1..={PARTITIONS_MAX}"));
            }
        }
        if self.producers == 0 && self.consumers == 0 {
            return usage("nothing to do: --producers and --consumers are both 0".into());
        }
        if self.protocol == Protocol::Mqtt {
            if self.qos > 1 {
                return usage("--qos must be 0 or 1".into());
            }
            if self.producers == 0 || self.rate == 0 {
                return usage("--protocol mqtt needs publishers (--producers) and an open-loop --rate".into());
            }
        } else if self.qos != 0 {
            return usage("--qos is for --protocol mqtt".into());
        }
        if self.producers > PRODUCERS_MAX || self.consumers > CONSUMERS_MAX {
            return usage(format!(
                "at most {PRODUCERS_MAX} producers and {CONSUMERS_MAX} consumers"
            ));
        }
        if self.batch_bytes < 64 || self.batch_bytes > BATCH_BYTES_MAX {
            return usage(format!("--batch-bytes must be 64..={BATCH_BYTES_MAX}"));
        }
        if self.linger_ms > LINGER_MS_MAX {
            return usage(format!("--linger-ms must be at most {LINGER_MS_MAX}"));
        }
        if self.keys > KEYS_MAX {
            return usage(format!("--keys must be at most {KEYS_MAX}"));
        }
        if self.keys == 0 && self.key_distribution != KeyDistribution::Uniform {
            return usage(format!(
                "--key-distribution {} needs keys: add --keys N",
                self.key_distribution
            ));
        }
        if u64::from(self.producers).saturating_mul(self.keys) > KEY_COUNTERS_MAX {
            return usage(format!(
                "--producers × --keys must be at most {KEY_COUNTERS_MAX} (each producer counts messages per key)"
            ));
        }
        if self.prefill > 0 {
            if self.prefill > PREFILL_MESSAGES_MAX {
                return usage(format!("--prefill must be at most {PREFILL_MESSAGES_MAX}"));
            }
            if self.consumers == 0 {
                return usage("--prefill measures consumers: add --consumers N".into());
            }
            if self.producers == 0 {
                return usage(
                    "--prefill fills the topic with --producers threads: --producers must be at least 1".into(),
                );
            }
            if self.acks == Acks::None {
                return usage(
                    "--prefill needs acknowledged writes to know where the fill ends: use --acks 1 or all".into(),
                );
            }
        }
        if self.rate > RATE_MAX {
            return usage(format!("--rate must be at most {RATE_MAX}"));
        }
        if self.duration.is_zero() {
            return usage("--duration must be more than 0".into());
        }
        Ok(())
    }

    /// Which workload the counts select.
    pub fn workload(&self) -> &'static str {
        if self.prefill > 0 {
            return "consume-prefilled";
        }
        match (self.producers, self.consumers) {
            (0, _) => "consume",
            (_, 0) => "produce",
            _ => "end-to-end",
        }
    }

    /// Whether producers run in the measured phase (not with `--prefill`, where they only fill).
    pub fn measures_producers(&self) -> bool {
        self.producers > 0 && self.prefill == 0
    }

    /// Every flag, as given or defaulted, for the JSON result.
    pub fn to_json(&self) -> Value {
        json!({
            "brokers": self.brokers,
            "topic": self.topic,
            "partitions": self.partitions,
            "producers": self.producers,
            "consumers": self.consumers,
            "message_size": self.message_size.to_string(),
            "batch_bytes": self.batch_bytes,
            "linger_ms": self.linger_ms,
            "acks": self.acks.to_string(),
            "compression": self.compression.to_string(),
            "payload": self.payload.to_string(),
            "keys": self.keys,
            "key_distribution": self.key_distribution.to_string(),
            "prefill": self.prefill,
            "rate": self.rate,
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "consume_from": self.consume_from.to_string(),
            "json": self.json.as_ref().map(|p| p.display().to_string()),
            "tls_ca": self.tls_ca.as_ref().map(|p| p.display().to_string()),
            "fsync_probe": self.fsync_probe.as_ref().map(|p| p.display().to_string()),
            "broker_version": self.broker_version,
            "shards": self.shards,
            "fsync": self.fsync,
            "quiet": self.quiet,
        })
    }
}

/// Parses `10`, `10s`, `1.5s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s, m or h)")),
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))?;
    if duration > DURATION_MAX {
        return Err(format!("`{text}` is longer than {} h", DURATION_MAX.as_secs() / 3600));
    }
    Ok(duration)
}

/// `--protocol`: what the bench speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// The Kafka protocol (the default).
    Kafka,
    /// MQTT 3.1.1.
    Mqtt,
}

/// `--message-size`: fixed or a uniform range (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageSize {
    /// Every value has this size.
    Fixed(usize),
    /// Sizes drawn uniformly from `min..=max`.
    Range {
        /// Smallest.
        min: usize,
        /// Largest.
        max: usize,
    },
}

impl MessageSize {
    /// The largest size this can produce.
    pub fn max(&self) -> usize {
        match *self {
            MessageSize::Fixed(size) => size,
            MessageSize::Range { max, .. } => max,
        }
    }

    /// One size, using `random` (uniform over u64) for ranges.
    pub fn sample(&self, random: u64) -> usize {
        match *self {
            MessageSize::Fixed(size) => size,
            MessageSize::Range { min, max } => {
                let span = u64::try_from(max - min).unwrap_or(0) + 1;
                min + usize::try_from(random % span).unwrap_or(0)
            }
        }
    }
}

impl FromStr for MessageSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| -> Result<usize, String> {
            let size: usize = part
                .trim()
                .parse()
                .map_err(|_| format!("`{part}` is not a size in bytes"))?;
            if size < ValueHeader::BYTES {
                return Err(format!(
                    "{size} B is too small: a message carries a {} B send-time header",
                    ValueHeader::BYTES
                ));
            }
            if size > MESSAGE_BYTES_MAX {
                return Err(format!("{size} B is over the {MESSAGE_BYTES_MAX} B bound"));
            }
            Ok(size)
        };
        match text.split_once("..") {
            None => Ok(MessageSize::Fixed(parse(text)?)),
            Some((min, max)) => {
                let (min, max) = (parse(min)?, parse(max.trim_start_matches('='))?);
                if min > max {
                    return Err(format!("range {min}..{max} is empty"));
                }
                Ok(if min == max {
                    MessageSize::Fixed(min)
                } else {
                    MessageSize::Range { min, max }
                })
            }
        }
    }
}

impl fmt::Display for MessageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageSize::Fixed(size) => write!(f, "{size}"),
            MessageSize::Range { min, max } => write!(f, "{min}..{max}"),
        }
    }
}

/// `--acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No response (0).
    None,
    /// The leader's (1).
    Leader,
    /// All in-sync replicas' (-1).
    All,
}

impl Acks {
    /// The wire value.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl FromStr for Acks {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("`{other}`: use all, -1, 1 or 0")),
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

/// `--consume-from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// The log end at start (ListOffsets -1).
    Latest,
    /// The log start (ListOffsets -2).
    Earliest,
}

impl FromStr for ConsumeFrom {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "latest" => Ok(ConsumeFrom::Latest),
            "earliest" => Ok(ConsumeFrom::Earliest),
            other => Err(format!("`{other}`: use latest or earliest")),
        }
    }
}

impl fmt::Display for ConsumeFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsumeFrom::Latest => "latest",
            ConsumeFrom::Earliest => "earliest",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("1000h").is_err());
    }

    #[test]
    fn message_sizes() {
        assert_eq!("1024".parse::<MessageSize>().unwrap(), MessageSize::Fixed(1024));
        assert_eq!(
            "100..1000".parse::<MessageSize>().unwrap(),
            MessageSize::Range { min: 100, max: 1000 }
        );
        assert_eq!(
            "100..=1000".parse::<MessageSize>().unwrap(),
            MessageSize::Range { min: 100, max: 1000 }
        );
        assert!("10".parse::<MessageSize>().is_err(), "below the header");
        assert!("1000..100".parse::<MessageSize>().is_err());
        assert!("x..100".parse::<MessageSize>().is_err());
        let range = MessageSize::Range { min: 100, max: 102 };
        let sizes: Vec<_> = (0..6).map(|r| range.sample(r)).collect();
        assert_eq!(sizes, [100, 101, 102, 100, 101, 102]);
        assert_eq!(range.sample(u64::MAX), 100 + (u64::MAX % 3) as usize);
    }

    #[test]
    fn flags_parse_and_validate() {
        let args = Args::try_parse_from([
            "bench",
            "--brokers",
            "a:1,b:2",
            "--acks",
            "-1",
            "--fsync-probe",
            "--rate",
            "5",
            "--consumers",
            "1",
        ])
        .unwrap();
        assert_eq!(args.brokers, ["a:1", "b:2"]);
        assert_eq!(args.acks, Acks::All);
        assert_eq!(args.fsync_probe, Some(PathBuf::from(".")));
        assert_eq!(args.rate, 5);
        assert_eq!(args.workload(), "end-to-end");
        args.validate().unwrap();
        assert!(Args::try_parse_from(["bench", "--compression", "brotli"]).is_err());
        let args = Args::try_parse_from([
            "bench",
            "--compression",
            "zstd",
            "--keys",
            "100",
            "--key-distribution",
            "zipf:1.2",
            "--payload",
            "text",
        ])
        .unwrap();
        assert_eq!(args.compression, Compression::Zstd);
        assert_eq!(args.key_distribution, KeyDistribution::Zipf { exponent: 1.2 });
        args.validate().unwrap();
        let args = Args::try_parse_from(["bench", "--key-distribution", "zipf:1.2"]).unwrap();
        assert!(args.validate().unwrap_err().to_string().contains("--keys"));
        let args = Args::try_parse_from(["bench", "--producers", "200", "--keys", "1000000"]).unwrap();
        assert!(args.validate().is_err(), "per-key counters bounded");

        let args = Args::try_parse_from(["bench", "--prefill", "1000"]).unwrap();
        assert!(args.validate().unwrap_err().to_string().contains("--consumers"));
        let args = Args::try_parse_from(["bench", "--prefill", "1000", "--consumers", "1", "--acks", "0"]).unwrap();
        assert!(args.validate().is_err());
        let args = Args::try_parse_from(["bench", "--prefill", "1000", "--consumers", "1"]).unwrap();
        args.validate().unwrap();
        assert_eq!(args.workload(), "consume-prefilled");
        assert!(!args.measures_producers());
        let args = Args::try_parse_from(["bench", "--producers", "0"]).unwrap();
        assert!(args.validate().is_err());
        let json = Args::try_parse_from(["bench"]).unwrap().to_json();
        for key in [
            "brokers",
            "message_size",
            "batch_bytes",
            "linger_ms",
            "acks",
            "rate",
            "fsync",
            "shards",
            "compression",
            "payload",
            "key_distribution",
            "prefill",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
