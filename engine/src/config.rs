//! Engine settings, parsed from the command line (clap) with embedded defaults.

use std::{net::SocketAddr, path::PathBuf, str::FromStr};

use clap::Parser;
use shardline_log::Durability;
use shardline_raft::ClusterSecret;

/// `engine --help` prints these.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "engine",
    version,
    about = "Shardline: a thread-per-core Kafka-compatible streaming engine"
)]
pub struct EngineConfig {
    /// Number of shards (one glommio executor each, pinned to one CPU). Default: one per CPU in --cpus, or
    /// the number of online CPUs.
    #[arg(long, value_parser = parse_shards)]
    pub shards: Option<usize>,

    /// CPUs to pin shards to, e.g. `0-3` or `0,2`. Shard i runs on the i-th CPU of the list (wrapping
    /// around if there are more shards than CPUs). Default: all online CPUs.
    #[arg(long)]
    pub cpus: Option<CpuList>,

    /// A PLAINTEXT Kafka listener named PLAINTEXT: shard 0's address, and the one to bootstrap from. With
    /// --shard-listeners own, shard k listens on the same host at this port + k (port 0: every shard takes an
    /// ephemeral port). Default 127.0.0.1:9092 when no --listener is given.
    #[arg(long, value_parser = parse_address)]
    pub listen: Option<SocketAddr>,

    /// A named Kafka listener, `NAME=PROTOCOL://HOST:PORT` (repeatable; PROTOCOL is PLAINTEXT, SSL,
    /// SASL_PLAINTEXT or SASL_SSL). Shard k of each listener takes its port + k. Followers fetch from leaders
    /// through --inter-broker-listener (default: the first listener, --listen's if given).
    #[arg(long = "listener", value_name = "NAME=PROTOCOL://HOST:PORT")]
    pub listeners: Vec<ListenerSpec>,

    /// Where clients are told to reach a named listener, `NAME=HOST:PORT` or `NAME=HOST` (repeatable; Kafka's
    /// advertised.listeners). Shard k is advertised at PORT + k. Default: the listener's own address.
    #[arg(long = "advertised-listener", value_name = "NAME=HOST[:PORT]")]
    pub advertised_listeners: Vec<AdvertisedListener>,

    /// Start even though a listener on a non-loopback address has no authentication (PLAINTEXT, or SSL
    /// without --tls-client-auth required) or the metadata Raft listener is not on loopback: anyone who can
    /// reach those ports can then read, write and delete everything. Without it such a start is refused.
    #[arg(long, default_value_t = false)]
    pub allow_insecure: bool,

    /// Certificate chain (PEM, leaf first) of SSL and SASL_SSL listeners. Reloaded on SIGHUP.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert. Reloaded on SIGHUP.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) client certificates must chain to; needed with --tls-client-auth requested or
    /// required. Reloaded on SIGHUP.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificates on SSL and SASL_SSL listeners: `none`, `requested` (verified if sent) or
    /// `required` (a client without one signed by --tls-ca is refused; its principal is the certificate's
    /// subject).
    #[arg(long, default_value = "none")]
    pub tls_client_auth: TlsClientAuth,

    /// Users of SASL_PLAINTEXT and SASL_SSL listeners: a file of `NAME:PASSWORD` lines (`#` starts a
    /// comment), read at start. Passwords are salted and hashed when read (SCRAM credentials); the file itself
    /// should be readable by the engine only.
    #[arg(long, value_name = "FILE")]
    pub sasl_users_file: Option<PathBuf>,

    /// How long a SASL login holds (Kafka's connections.max.reauth.ms): clients that support KIP-368
    /// re-authenticate on the connection before it ends; a connection that has not is closed at its next
    /// request. 0: logins hold for the life of the connection.
    #[arg(long, default_value_t = 0)]
    pub sasl_session_lifetime_ms: u64,

    /// SASL mechanisms offered, comma-separated: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    #[arg(long, default_value = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512")]
    pub sasl_mechanisms: SaslMechanisms,

    /// The listener followers fetch from leaders through (Kafka's inter.broker.listener.name): every broker
    /// of a cluster has a listener of this name and protocol. Over SSL and SASL_SSL a follower checks the
    /// leader's certificate against --tls-ca and presents --tls-cert (mutual TLS); over SASL_PLAINTEXT and
    /// SASL_SSL it logs in as --inter-broker-user. Default: the first listener.
    #[arg(long, value_name = "NAME")]
    pub inter_broker_listener: Option<String>,

    /// The SASL user followers log in as on a SASL inter-broker listener; its password is its line in
    /// --sasl-users-file. With --authorizer acl it needs ClusterAction on the cluster (or --super-user).
    #[arg(long, value_name = "NAME")]
    pub inter_broker_user: Option<String>,

    /// The SASL mechanism of that login: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, default_value = "SCRAM-SHA-512", value_parser = parse_mechanism)]
    pub inter_broker_sasl_mechanism: crate::sasl::Mechanism,

    /// Who may do what: `none` (everyone may do everything, as Kafka without an authorizer) or `acl` (Kafka's
    /// ACLs, kept in the metadata Raft group and managed with CreateAcls/DeleteAcls or `shardctl acl`).
    #[arg(long, default_value = "none")]
    pub authorizer: AuthorizerKind,

    /// A principal that may do everything when --authorizer acl, e.g. `User:admin` (repeatable). Brokers
    /// that fetch from each other need it too (docs/security.md).
    #[arg(long = "super-user", value_name = "User:NAME")]
    pub super_users: Vec<String>,

    /// With --authorizer acl, allow an operation on a resource no ACL names at all (Kafka's
    /// allow.everyone.if.no.acl.found). Default: refuse it.
    #[arg(long, default_value_t = false)]
    pub allow_everyone_if_no_acl_found: bool,

    /// How clients reach shards. `own`: each shard has its own port (--listen's port + k) and Metadata names
    /// each shard as a broker (id = node id + 1000 × shard), so clients send a partition's requests straight
    /// to the core that owns it. `shared`: every shard listens on --listen with SO_REUSEPORT, the kernel
    /// picks a shard per connection, and requests for other shards' partitions cross cores.
    #[arg(long, default_value = "own")]
    pub shard_listeners: ShardListeners,

    /// Address given to clients in Metadata responses (`HOST` or `HOST:PORT`; with own shard listeners shard
    /// k is advertised at PORT + k). Default: --listen and the ports bound.
    #[arg(long)]
    pub advertised_addr: Option<String>,

    /// Directory for partition logs and the metadata group.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,

    /// This broker's node id in the cluster, 0 to 999 (shard k of node n is Kafka broker n + 1000 × k).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..1000))]
    pub node_id: i32,

    /// The HTTP endpoint (`/metrics` for Prometheus, `/health`, `/ready`), served by shard 0: `HOST:PORT`,
    /// or `off`. Read-only, unauthenticated: on a non-loopback address anyone who can reach it reads the
    /// metrics (topic and group names included), as with Redpanda's admin port; a warning says so at start.
    #[arg(long, default_value = "127.0.0.1:9644", value_name = "HOST:PORT|off")]
    pub http_listen: HttpListen,

    /// The MQTT 3.1.1 / 5.0 listener (docs/mqtt.md): `HOST:PORT`, or `off`. Every shard accepts on it;
    /// without --mqtt-auth password, a non-loopback address needs --allow-insecure.
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "HOST:PORT|off")]
    pub mqtt_listen: MqttListen,

    /// MQTT over TLS (docs/mqtt.md): `HOST:PORT` (8883 by custom), or `off`. Uses --tls-cert, --tls-key
    /// and, for client certificates, --tls-ca and --tls-client-auth, as the Kafka TLS listeners do.
    #[arg(long, default_value = "off", value_name = "HOST:PORT|off")]
    pub mqtt_tls_listen: MqttListen,

    /// How MQTT clients are authenticated: `none`, or `password` (the CONNECT's user name and password,
    /// checked against the SASL users: --sasl-users-file and those stored with AlterUserScramCredentials).
    #[arg(long, default_value = "none", value_name = "none|password")]
    pub mqtt_auth: MqttAuth,

    /// Per-MQTT-topic access rules in mosquitto's acl_file format (`topic`, `user`, `pattern` lines;
    /// docs/mqtt.md), read once at start; a line that does not parse stops the start. Checked besides
    /// --authorizer acl (both must allow). Off: every MQTT topic is open (to what the Kafka ACLs allow).
    #[arg(long, value_name = "PATH")]
    pub mqtt_acl_file: Option<PathBuf>,

    /// The Kafka topic MQTT messages are stored in (created on the first MQTT connection with
    /// --default-partitions); the MQTT topic is each record's key and its `mqtt.topic` header.
    #[arg(long, default_value = "mqtt", value_name = "TOPIC")]
    pub mqtt_kafka_topic: String,

    /// Largest MQTT packet accepted (and the Maximum Packet Size a v5 CONNACK announces); a bigger one
    /// closes the connection (v5: reason 0x95).
    #[arg(long, default_value_t = 1_000_000)]
    pub mqtt_max_packet_bytes: usize,

    /// Default durability of partition logs: `always` (fdatasync before acknowledging; concurrent appends
    /// share one sync), `interval:MS` (sync at least every MS milliseconds), or `never` (sync on segment
    /// roll and shutdown only). A topic's `shardline.fsync` config overrides it.
    #[arg(long, default_value = "always")]
    pub fsync: FsyncPolicy,

    /// Bytes of io_uring registered buffers per shard. Keep shards × this under `ulimit -l` (8 MiB here);
    /// if registration fails glommio falls back to unregistered buffers, and the start-up line says so.
    #[arg(long, default_value_t = 512 << 10)]
    pub io_memory: usize,

    /// Largest request frame accepted; a bigger length prefix closes the connection.
    #[arg(long, default_value_t = 100 << 20)]
    pub max_frame_bytes: usize,

    /// Most client connections this broker serves at once (each shard takes its share, rounded up); more are
    /// closed as they arrive.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,

    /// A connection with no request for this long, and none unanswered, is closed (Kafka's
    /// connections.max.idle.ms).
    #[arg(long, default_value_t = 600_000)]
    pub connections_max_idle_ms: u64,

    /// Requests one connection may have read and not yet answered; its socket is not read past this.
    #[arg(long, default_value_t = 16)]
    pub max_in_flight_requests_per_connection: usize,

    /// Most entries (topics, partitions, groups, ...) one request may name; a request naming more closes its
    /// connection before its entries are decoded.
    #[arg(long, default_value_t = 10_000)]
    pub max_request_entries: usize,

    /// Bytes of request frames each shard holds at once (read and not yet answered, Kafka's
    /// queued.max.request.bytes); a connection whose next frame does not fit waits for room. At least
    /// --max-frame-bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub request_memory_bytes: usize,

    /// Partition replicas each shard may host; CreateTopics and CreatePartitions that would take the broker
    /// past shards × this get POLICY_VIOLATION and create nothing.
    #[arg(long, default_value_t = 2_000)]
    pub max_partitions_per_shard: usize,
    /// Testing aid: write every Kafka request frame received into DIR (one file per distinct frame), to
    /// seed the fuzz corpora with real client traffic (`scripts/fuzz seeds`). Slows serving; off by default.
    #[arg(long, value_name = "DIR", env = "SHARDLINE_CAPTURE_FRAMES")]
    pub capture_frames: Option<PathBuf>,

    /// Create a topic when a client produces to, or asks metadata for, one that does not exist.
    #[arg(long, default_value_t = false)]
    pub auto_create_topics: bool,

    /// Partitions of a topic created without a count (auto-created, or CreateTopics with -1).
    #[arg(long, default_value_t = 1)]
    pub default_partitions: i32,

    /// How partition logs write batches into the page cache: `inline` (`pwrite` on the shard: no worker
    /// hop, but the shard waits if the kernel throttles writers) or `io-uring` (a kernel worker thread
    /// does each buffered write; the shard never blocks). fdatasync goes through io_uring either way.
    #[arg(long, default_value = "inline")]
    pub log_writes: LogWrites,

    /// How long each shard's log cleaner waits between passes over its compacted partitions (ms); Kafka's
    /// `log.cleaner.backoff.ms`. A pass that finds too little dirty data does nothing.
    #[arg(long, default_value_t = 15_000)]
    pub log_cleaner_backoff_ms: u64,

    /// Segment size of `__consumer_offsets` partitions (bytes), 65536 to 4294967295, unless the topic sets
    /// `segment.bytes`; Kafka's `offsets.topic.segment.bytes`. The cleaner compacts only sealed segments, so
    /// this bounds the uncompacted commits a start-up replays: 16 MiB ≈ 150 k commits (the 128 MiB of
    /// other topics would leave ≈ 1 M).
    #[arg(long, default_value_t = 16 << 20, value_parser = parse_segment_bytes)]
    pub offsets_topic_segment_bytes: u64,

    /// Segment size bound of partition logs (bytes), 65536 to 4294967295.
    #[arg(long, default_value_t = 128 << 20, value_parser = parse_segment_bytes)]
    pub segment_bytes: u64,

    /// Microseconds a shard spins before parking when idle (trades CPU for wake-up latency).
    #[arg(long, default_value_t = 0)]
    pub spin_before_park_us: u64,

    /// Cluster mode: address this node's metadata Raft listener binds (node-to-node traffic). Needs --peers.
    #[arg(long, requires = "peers")]
    pub raft_listen: Option<SocketAddr>,

    /// Cluster mode: every metadata voter as `ID@HOST:PORT` (their --raft-listen addresses), this node
    /// included, e.g. `1@10.0.0.1:19092,2@10.0.0.2:19092,3@10.0.0.3:19092`. 3 or 5 voters tolerate 1 or 2
    /// failures. Needs --raft-listen.
    #[arg(long, requires = "raft_listen")]
    pub peers: Option<PeerList>,

    /// Cluster mode: file holding the secret every metadata voter shares (at least 32 bytes; trailing
    /// whitespace ignored; e.g. `openssl rand -hex 32`). Peers prove it in a handshake on every raft
    /// connection and with an HMAC on every frame; without it a non-loopback --raft-listen needs
    /// --allow-insecure.
    #[arg(long, requires = "raft_listen", value_name = "FILE")]
    pub raft_secret_file: Option<PathBuf>,

    /// A broker silent (no heartbeat to the metadata leader) this long is fenced: it leads no partition
    /// and leaves every ISR until it heartbeats again.
    #[arg(long, default_value_t = shardline_raft::DEFAULT_BROKER_SESSION_TIMEOUT_MS)]
    pub broker_session_timeout_ms: u64,

    /// How often a broker heartbeats to the metadata leader.
    #[arg(long, default_value_t = shardline_raft::DEFAULT_BROKER_HEARTBEAT_INTERVAL_MS)]
    pub broker_heartbeat_interval_ms: u64,

    /// A follower not caught up with its leader for this long leaves the partition's in-sync replicas.
    #[arg(long, default_value_t = 10_000)]
    pub replica_lag_time_max_ms: u64,

    /// Replication factor of topics created without one (auto-created, or CreateTopics with -1).
    #[arg(long, default_value_t = 1)]
    pub default_replication_factor: i16,

    /// Log lines on stdout as `text` (for people) or `json` (one JSON object per line, for log collectors).
    /// Verbosity follows RUST_LOG filters (default `info,openraft=warn`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// A request taking longer than this, decode to answer, is logged at INFO with its API and partitions
    /// (a Fetch's long-poll wait, up to its max wait, does not count); 0 logs none.
    #[arg(long, default_value_t = 1000)]
    pub slow_request_ms: u64,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `tracing`'s human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`), `span`s.
    Json,
}

impl EngineConfig {
    /// CPUs the shards run on, one per shard.
    pub fn shard_cpus(&self) -> Vec<usize> {
        let cpus = match &self.cpus {
            Some(list) => list.0.clone(),
            None => (0..online_cpus()).collect(),
        };
        let shards = self.shard_count();
        (0..shards)
            .map(|i| cpus.get(i % cpus.len().max(1)).copied().unwrap_or(0))
            .collect()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        match (self.shards, &self.cpus) {
            (Some(n), _) => n.max(1),
            (None, Some(list)) => list.0.len().max(1),
            (None, None) => online_cpus(),
        }
    }

    /// Checks the flags against each other; the message names the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.request_memory_bytes < self.max_frame_bytes {
            return Err(format!(
                "--request-memory-bytes ({}) must be at least --max-frame-bytes ({}): a shard must hold one whole request",
                self.request_memory_bytes, self.max_frame_bytes
            ));
        }
        let positive = [
            ("--max-connections", self.max_connections),
            (
                "--max-in-flight-requests-per-connection",
                self.max_in_flight_requests_per_connection,
            ),
            ("--max-request-entries", self.max_request_entries),
            ("--max-partitions-per-shard", self.max_partitions_per_shard),
            ("--max-frame-bytes", self.max_frame_bytes),
            ("--mqtt-max-packet-bytes", self.mqtt_max_packet_bytes),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        if self.connections_max_idle_ms == 0 {
            return Err("--connections-max-idle-ms must be at least 1".to_string());
        }
        shardline_raft::validate_topic_name(&self.mqtt_kafka_topic)
            .map_err(|e| format!("--mqtt-kafka-topic {}: {e}", self.mqtt_kafka_topic))?;
        let listeners = self.listeners_resolved()?;
        self.cluster_secret()?;
        if let Some(conflict) = self.port_conflicts(&listeners) {
            return Err(conflict);
        }
        if let Some(list) = &self.cpus {
            let allowed = allowed_cpus();
            if let Some(missing) = list.0.iter().find(|cpu| !allowed.contains(cpu)) {
                return Err(format!(
                    "--cpus names CPU {missing}, which this process may not run on (allowed: {})",
                    allowed.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
                ));
            }
        }
        Ok(())
    }

    /// The secret of `--raft-secret-file`, read and checked; `None` without
    /// the flag.
    pub fn cluster_secret(&self) -> Result<Option<ClusterSecret>, String> {
        let Some(path) = &self.raft_secret_file else {
            return Ok(None);
        };
        let mut bytes =
            std::fs::read(path).map_err(|e| format!("--raft-secret-file {}: cannot read it: {e}", path.display()))?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        ClusterSecret::new(bytes)
            .map(Some)
            .map_err(|e| format!("--raft-secret-file {}: {e}", path.display()))
    }

    /// This shard's share of `--max-connections` (rounded up).
    pub fn connections_per_shard(&self) -> usize {
        self.max_connections.div_ceil(self.shard_count()).max(1)
    }

    /// Every Kafka listener, resolved and checked: `--listen` (named
    /// PLAINTEXT) first if given, then each `--listener`; the default
    /// PLAINTEXT listener on 127.0.0.1:9092 when neither is given. Checks
    /// names, TLS and SASL settings, and refuses an unauthenticated
    /// listener on a non-loopback address without `--allow-insecure`.
    pub fn listeners_resolved(&self) -> Result<Vec<Listener>, String> {
        let mut listeners = Vec::new();
        let default_listen = (self.listeners.is_empty() && self.listen.is_none()).then_some(DEFAULT_LISTEN);
        if let Some(address) = self.listen.or(default_listen) {
            let advertised = match &self.advertised_addr {
                Some(addr) => Some(parse_host_port(addr)?),
                None => None,
            };
            listeners.push(Listener {
                name: PLAINTEXT_LISTENER.to_string(),
                protocol: SecurityProtocol::Plaintext,
                address,
                advertised,
            });
        }
        for spec in &self.listeners {
            listeners.push(Listener {
                name: spec.name.clone(),
                protocol: spec.protocol,
                address: spec.address,
                advertised: None,
            });
        }
        if listeners.len() > LISTENERS_MAX {
            return Err(format!(
                "at most {LISTENERS_MAX} listeners (--listen and --listener) are served"
            ));
        }
        for (i, listener) in listeners.iter().enumerate() {
            if listeners.iter().skip(i + 1).any(|other| other.name == listener.name) {
                return Err(format!(
                    "listener name {} is used twice (--listen is the listener PLAINTEXT)",
                    listener.name
                ));
            }
        }
        for advertised in &self.advertised_listeners {
            let listener = listeners
                .iter_mut()
                .find(|listener| listener.name == advertised.name)
                .ok_or_else(|| format!("--advertised-listener names {}, which is no listener", advertised.name))?;
            listener.advertised = Some((advertised.host.clone(), advertised.port));
        }
        let tls_needed = listeners.iter().any(|listener| listener.protocol.tls()) || self.mqtt_tls_listen.0.is_some();
        if tls_needed && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err("SSL and SASL_SSL listeners and --mqtt-tls-listen need --tls-cert and --tls-key".to_string());
        }
        if tls_needed && self.tls_client_auth != TlsClientAuth::None && self.tls_ca.is_none() {
            return Err("--tls-client-auth requested or required needs --tls-ca".to_string());
        }
        if listeners.iter().any(|listener| listener.protocol.sasl()) && self.sasl_users_file.is_none() {
            return Err("SASL_PLAINTEXT and SASL_SSL listeners need --sasl-users-file".to_string());
        }
        if self.mqtt_auth == MqttAuth::Password && self.sasl_users_file.is_none() {
            return Err("--mqtt-auth password needs --sasl-users-file".to_string());
        }
        if self.authorizer == AuthorizerKind::None
            && (!self.super_users.is_empty() || self.allow_everyone_if_no_acl_found)
        {
            return Err(
                "--super-user and --allow-everyone-if-no-acl-found need --authorizer acl (without it everyone may do \
                 everything)"
                    .to_string(),
            );
        }
        for super_user in &self.super_users {
            crate::acl::Principal::parse(super_user).map_err(|e| format!("--super-user: {e}"))?;
        }
        self.inter_broker(&listeners)?;
        if !self.allow_insecure {
            if let Some(open) = self.insecure_exposures(&listeners).first() {
                return Err(format!(
                    "{open}: anyone who can reach it can read, write and delete everything. Bind it to a loopback \
                     address, use a SASL_PLAINTEXT or SASL_SSL listener (or SSL with --tls-client-auth required), \
                     or start with --allow-insecure to accept the risk"
                ));
            }
        }
        Ok(listeners)
    }

    /// The listener followers fetch through, and the user they log in as
    /// there (if it speaks SASL), checked against the rest of the flags.
    /// What followers need (a CA for TLS, a user for SASL) is required in a
    /// cluster (`--peers`) only: a single node has no followers.
    pub fn inter_broker<'a>(&self, listeners: &'a [Listener]) -> Result<(&'a Listener, Option<&str>), String> {
        let listener = match &self.inter_broker_listener {
            Some(name) => {
                let name = name.to_ascii_uppercase();
                listeners
                    .iter()
                    .find(|listener| listener.name == name)
                    .ok_or_else(|| format!("--inter-broker-listener names {name}, which is no listener"))?
            }
            None => listeners.first().ok_or_else(|| "no Kafka listener".to_string())?,
        };
        let cluster = self.peers.is_some();
        if cluster && listener.protocol.tls() && self.tls_ca.is_none() {
            return Err(format!(
                "the inter-broker listener {} speaks TLS: followers need --tls-ca to check their leaders' certificates",
                listener.name
            ));
        }
        let user = self.inter_broker_user.as_deref();
        if listener.protocol.sasl() {
            if cluster && user.is_none() {
                return Err(format!(
                    "the inter-broker listener {} speaks SASL: followers need --inter-broker-user (a user of \
                     --sasl-users-file)",
                    listener.name
                ));
            }
            if !self.sasl_mechanisms.0.contains(&self.inter_broker_sasl_mechanism) {
                return Err(format!(
                    "--inter-broker-sasl-mechanism {} is not in --sasl-mechanisms",
                    self.inter_broker_sasl_mechanism.name()
                ));
            }
        } else if user.is_some() {
            return Err(format!(
                "--inter-broker-user is for a SASL inter-broker listener; {} is {}",
                listener.name,
                listener.protocol.name()
            ));
        }
        Ok((listener, user))
    }

    /// What this configuration exposes without authentication on a
    /// non-loopback address, one line each (for the refusal, or the
    /// warning `--allow-insecure` logs at every start).
    pub fn insecure_exposures(&self, listeners: &[Listener]) -> Vec<String> {
        let mut open: Vec<String> = listeners
            .iter()
            .filter(|listener| !listener.address.ip().is_loopback())
            .filter(|listener| {
                !(listener.protocol.sasl()
                    || (listener.protocol.tls() && self.tls_client_auth == TlsClientAuth::Required))
            })
            .map(|listener| {
                format!(
                    "listener {} ({}) on non-loopback {} authenticates no one",
                    listener.name,
                    listener.protocol.name(),
                    listener.address
                )
            })
            .collect();
        if let Some(mqtt) = self
            .mqtt_listen
            .0
            .filter(|address| !address.ip().is_loopback() && self.mqtt_auth == MqttAuth::None)
        {
            open.push(format!(
                "the MQTT listener on non-loopback {mqtt} authenticates no one (give --mqtt-auth password)"
            ));
        }
        if let Some(mqtt) = self.mqtt_tls_listen.0.filter(|address| {
            !address.ip().is_loopback()
                && self.mqtt_auth == MqttAuth::None
                && self.tls_client_auth != TlsClientAuth::Required
        }) {
            open.push(format!(
                "the MQTT TLS listener on non-loopback {mqtt} authenticates no one (give --mqtt-auth password, \
                 or --tls-client-auth required)"
            ));
        }
        if let Some(raft) = self
            .raft_listen
            .filter(|address| !address.ip().is_loopback() && self.raft_secret_file.is_none())
        {
            open.push(format!(
                "the metadata Raft listener on non-loopback {raft} authenticates no one (give --raft-secret-file)"
            ));
        }
        open
    }
}

/// `--listen`'s address when no listener is named at all.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9092);

/// The name of the listener `--listen` makes.
pub(crate) const PLAINTEXT_LISTENER: &str = "PLAINTEXT";

/// Kafka listeners one engine serves at most: each takes a socket per
/// shard and an accept task per shard.
pub const LISTENERS_MAX: usize = 8;

/// One Kafka listener, resolved from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Its name (upper case), as clients' Metadata answers are chosen by it.
    pub name: String,
    /// What it speaks.
    pub protocol: SecurityProtocol,
    /// Shard 0's address (shard k: port + k).
    pub address: SocketAddr,
    /// Host and port clients are told, if not `address`.
    pub advertised: Option<(String, Option<u16>)>,
}

/// Kafka's `security.protocol` of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// TCP, no authentication.
    Plaintext,
    /// TLS; authenticated by client certificate if `--tls-client-auth required`.
    Ssl,
    /// SASL over TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// True when the listener speaks TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// True when clients authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }

    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            other => Err(format!(
                "unknown protocol `{other}`: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            )),
        }
    }
}

/// `--listener NAME=PROTOCOL://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Listener name, upper case.
    pub name: String,
    /// What it speaks.
    pub protocol: SecurityProtocol,
    /// Shard 0's address.
    pub address: SocketAddr,
}

/// Longest listener name (Kafka's are short words such as CLIENT or INTERNAL).
const LISTENER_NAME_BYTES_MAX: usize = 64;

fn parse_listener_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= LISTENER_NAME_BYTES_MAX
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "listener name `{name}` must be 1 to {LISTENER_NAME_BYTES_MAX} letters, digits, `_` or `-`"
        ));
    }
    Ok(name.to_ascii_uppercase())
}

impl FromStr for ListenerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("listener `{s}` is not NAME=PROTOCOL://HOST:PORT"))?;
        let (protocol, address) = rest
            .split_once("://")
            .ok_or_else(|| format!("listener `{s}` is not NAME=PROTOCOL://HOST:PORT"))?;
        Ok(ListenerSpec {
            name: parse_listener_name(name)?,
            protocol: protocol.parse()?,
            address: parse_address(address)?,
        })
    }
}

/// `--advertised-listener NAME=HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedListener {
    /// The listener's name, upper case.
    pub name: String,
    /// Host clients connect to.
    pub host: String,
    /// Shard 0's port clients connect to; the bound port if `None`.
    pub port: Option<u16>,
}

impl FromStr for AdvertisedListener {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, address) = s
            .split_once('=')
            .ok_or_else(|| format!("advertised listener `{s}` is not NAME=HOST:PORT"))?;
        let (host, port) = parse_host_port(address)?;
        Ok(AdvertisedListener {
            name: parse_listener_name(name)?,
            host,
            port,
        })
    }
}

/// `HOST` or `HOST:PORT` as clients are told.
fn parse_host_port(address: &str) -> Result<(String, Option<u16>), String> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            let port = port.parse().map_err(|_| format!("bad port in `{address}`"))?;
            Ok((host.to_string(), Some(port)))
        }
        Some(_) => Err(format!("no host in `{address}`")),
        None if address.is_empty() => Err("empty advertised address".to_string()),
        None => Ok((address.to_string(), None)),
    }
}

/// `--mqtt-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttAuth {
    /// Every CONNECT is accepted.
    None,
    /// A CONNECT needs a user name and password of a SASL user.
    Password,
}

impl FromStr for MqttAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(MqttAuth::None),
            "password" => Ok(MqttAuth::Password),
            other => Err(format!("unknown MQTT authentication `{other}`: use none or password")),
        }
    }
}

/// `--tls-client-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsClientAuth {
    /// No client certificate asked for.
    None,
    /// Asked for, verified if sent.
    Requested,
    /// Required.
    Required,
}

impl FromStr for TlsClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(TlsClientAuth::None),
            "requested" => Ok(TlsClientAuth::Requested),
            "required" => Ok(TlsClientAuth::Required),
            other => Err(format!(
                "unknown client auth `{other}`: use none, requested or required"
            )),
        }
    }
}

/// `--authorizer`: whether requests are checked against ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizerKind {
    /// Everyone may do everything.
    None,
    /// Kafka's ACLs (docs/security.md).
    Acl,
}

impl FromStr for AuthorizerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(AuthorizerKind::None),
            "acl" => Ok(AuthorizerKind::Acl),
            other => Err(format!("unknown authorizer `{other}`: use none or acl")),
        }
    }
}

impl EngineConfig {
    /// The authorizer these flags describe (checked by `validate`).
    pub(crate) fn authorizer(&self) -> crate::acl::Authorizer {
        let super_users = self
            .super_users
            .iter()
            .filter_map(|text| crate::acl::Principal::parse(text).ok());
        crate::acl::Authorizer::new(
            self.authorizer == AuthorizerKind::Acl,
            super_users,
            self.allow_everyone_if_no_acl_found,
        )
    }
}

/// `--sasl-mechanisms`: the SASL mechanisms offered, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslMechanisms(pub Vec<crate::sasl::Mechanism>);

impl FromStr for SaslMechanisms {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mechanisms = Vec::new();
        for name in s.split(',').map(str::trim).filter(|name| !name.is_empty()) {
            let mechanism = parse_mechanism(name)?;
            if !mechanisms.contains(&mechanism) {
                mechanisms.push(mechanism);
            }
        }
        if mechanisms.is_empty() {
            return Err("no SASL mechanism named".to_string());
        }
        Ok(SaslMechanisms(mechanisms))
    }
}

/// One SASL mechanism by its name.
fn parse_mechanism(name: &str) -> Result<crate::sasl::Mechanism, String> {
    crate::sasl::Mechanism::from_name(name)
        .ok_or_else(|| format!("unknown SASL mechanism `{name}`: use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"))
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPUs this process may run on (its affinity mask), ascending.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bit set the call fills; its size is passed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; `set` is valid for writes of its size.
    let result = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) };
    if result != 0 {
        // Unknown: every CPU the count of online ones covers.
        return (0..online_cpus()).collect();
    }
    // SAFETY: `set` was filled above; CPU_ISSET only reads it.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
        .collect()
}

/// Smallest `--segment-bytes`: a few batches of a small request, with room
/// for the index to be useful (a segment must hold at least one batch).
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;

/// `--shards`: at least one.
fn parse_shards(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("at least 1 shard is needed".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a shard count: {e}")),
    }
}

/// `--segment-bytes`: [`SEGMENT_BYTES_MIN`] up to `u32::MAX` (Kafka's
/// `segment.bytes` is a 32-bit int).
fn parse_segment_bytes(s: &str) -> Result<u64, String> {
    let bytes: u64 = s.parse().map_err(|e| format!("not a byte count: {e}"))?;
    if !(SEGMENT_BYTES_MIN..=u64::from(u32::MAX)).contains(&bytes) {
        return Err(format!("must be between {SEGMENT_BYTES_MIN} and {}", u32::MAX));
    }
    Ok(bytes)
}

/// A `HOST:PORT` listen address; host names are resolved (the first
/// address, IPv4 first, as `localhost:9092` means 127.0.0.1 to clients).
fn parse_address(s: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = s.parse::<SocketAddr>() {
        return Ok(address);
    }
    let addresses: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("`{s}` is not HOST:PORT or does not resolve: {e}"))?
        .collect();
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// `--http-listen`: where the HTTP endpoint binds, or `None` (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListen(pub Option<SocketAddr>);

impl FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_optional_address(s).map(HttpListen)
    }
}

impl EngineConfig {
    /// The Kafka or Raft port `--http-listen` or `--mqtt-listen` would
    /// share, if any (and whether those two share one). Sockets bound with
    /// SO_REUSEADDR may share a port until one of them listens, so binding
    /// alone does not catch it: the second listen would fail on a shard,
    /// after the data directory is opened.
    fn port_conflicts(&self, listeners: &[Listener]) -> Option<String> {
        let http = self.http_listen.0.filter(|address| address.port() != 0);
        let mqtt = self.mqtt_listen.0.filter(|address| address.port() != 0);
        if let (Some(http), Some(mqtt)) = (http, mqtt) {
            if http.port() == mqtt.port() && overlaps(http.ip(), mqtt.ip()) {
                return Some(format!(
                    "--http-listen {http} and --mqtt-listen {mqtt} share a port; pick another"
                ));
            }
        }
        [("--http-listen", http), ("--mqtt-listen", mqtt)]
            .into_iter()
            .filter_map(|(flag, address)| Some((flag, address?)))
            .find_map(|(flag, address)| self.port_conflict(flag, address, listeners))
    }

    /// The Kafka or Raft port `flag`'s `address` would share, if any.
    fn port_conflict(&self, flag: &str, address: SocketAddr, listeners: &[Listener]) -> Option<String> {
        let ports_per_listener = match self.shard_listeners {
            ShardListeners::Own => u32::try_from(self.shard_count()).unwrap_or(u32::MAX),
            ShardListeners::Shared => 1,
        };
        for listener in listeners {
            let first = u32::from(listener.address.port());
            let port = u32::from(address.port());
            if first != 0
                && overlaps(listener.address.ip(), address.ip())
                && (first..first.saturating_add(ports_per_listener)).contains(&port)
            {
                return Some(format!(
                    "{flag} {address} is also the Kafka port of shard {} of listener {} (shard k listens on \
                     its port + k); pick another port",
                    port - first,
                    listener.name
                ));
            }
        }
        self.raft_listen
            .filter(|raft| raft.port() == address.port() && overlaps(raft.ip(), address.ip()))
            .map(|raft| {
                format!("{flag} {address} is also the metadata Raft listener's port ({raft}); pick another port")
            })
    }

    /// What the HTTP endpoint exposes on a non-loopback address, for the
    /// warning logged at every start (allowed: it is read-only).
    pub fn http_exposure(&self) -> Option<String> {
        self.http_listen
            .0
            .filter(|address| !address.ip().is_loopback())
            .map(|address| {
                format!(
                    "the HTTP endpoint on non-loopback {address} serves /metrics (topic and group names                      included) to anyone who can reach it; firewall it, or bind --http-listen to loopback"
                )
            })
    }
}

/// `HOST:PORT`, or `off` (also `none`, `disabled`) for no address.
fn parse_optional_address(s: &str) -> Result<Option<SocketAddr>, String> {
    match s.to_ascii_lowercase().as_str() {
        "off" | "none" | "disabled" => Ok(None),
        _ => parse_address(s).map(Some),
    }
}

/// Whether sockets bound to `a` and to `b` (same port) would collide.
fn overlaps(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// `--mqtt-listen`: where every shard takes MQTT connections, or `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqttListen(pub Option<SocketAddr>);

impl FromStr for MqttListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_optional_address(s).map(MqttListen)
    }
}

/// `--log-writes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogWrites(pub shardline_log::WritePath);

impl FromStr for LogWrites {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "io-uring" => Ok(LogWrites(shardline_log::WritePath::IoUring)),
            "inline" => Ok(LogWrites(shardline_log::WritePath::Inline)),
            other => Err(format!("unknown log write path `{other}`: use io-uring or inline")),
        }
    }
}

/// How clients reach shards (`--shard-listeners`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardListeners {
    /// Each shard has its own port and is named as a broker of its own.
    Own,
    /// All shards share one port (SO_REUSEPORT).
    Shared,
}

impl FromStr for ShardListeners {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "own" => Ok(ShardListeners::Own),
            "shared" => Ok(ShardListeners::Shared),
            other => Err(format!("unknown shard listeners `{other}`: use own or shared")),
        }
    }
}

/// A CPU list such as `0-3` or `0,2,5-6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl FromStr for CpuList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cpus = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: usize = a.trim().parse().map_err(|_| format!("bad cpu number in `{part}`"))?;
                    let b: usize = b.trim().parse().map_err(|_| format!("bad cpu number in `{part}`"))?;
                    if a > b {
                        return Err(format!("descending cpu range `{part}`"));
                    }
                    cpus.extend(a..=b);
                }
                None => cpus.push(part.parse().map_err(|_| format!("bad cpu number `{part}`"))?),
            }
        }
        if cpus.is_empty() {
            return Err("empty cpu list".to_string());
        }
        Ok(CpuList(cpus))
    }
}

/// Metadata voters: `1@host:port,2@host:port,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerList(pub std::collections::BTreeMap<u64, String>);

impl FromStr for PeerList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut peers = std::collections::BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, address) = part
                .split_once('@')
                .ok_or_else(|| format!("peer `{part}` is not ID@HOST:PORT"))?;
            let id: u64 = id.trim().parse().map_err(|_| format!("bad node id in `{part}`"))?;
            let address = address.trim();
            match address.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(format!("bad address in `{part}` (want HOST:PORT)")),
            }
            if peers.insert(id, address.to_string()).is_some() {
                return Err(format!("node id {id} listed twice"));
            }
        }
        if peers.is_empty() {
            return Err("empty peer list".to_string());
        }
        Ok(PeerList(peers))
    }
}

/// `always`, `interval:MS` or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsyncPolicy(pub Durability);

/// Bytes written between syncs in interval mode, whatever the interval: bounds
/// what a crash can lose under a burst.
const INTERVAL_SYNC_BYTES: u64 = 64 << 20;

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy(Durability::Always)),
            "never" => Ok(FsyncPolicy(Durability::Never)),
            other => match other.strip_prefix("interval:") {
                Some(ms) => {
                    let interval_ms: u64 = ms.parse().map_err(|_| format!("bad interval `{ms}` (milliseconds)"))?;
                    if interval_ms == 0 {
                        return Err("interval must be at least 1 ms".to_string());
                    }
                    Ok(FsyncPolicy(Durability::Interval {
                        interval_ms,
                        bytes: INTERVAL_SYNC_BYTES,
                    }))
                }
                None => Err(format!(
                    "unknown fsync policy `{other}`: use always, interval:MS or never"
                )),
            },
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Durability::Always => write!(f, "always"),
            Durability::Never => write!(f, "never"),
            Durability::Interval { interval_ms, .. } => write!(f, "interval:{interval_ms}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_flags_are_usage_errors_before_anything_starts() {
        let refused = |args: &[&str]| {
            let mut all = vec!["engine"];
            all.extend_from_slice(args);
            EngineConfig::try_parse_from(all).is_err()
        };
        assert!(refused(&["--segment-bytes", "10"]), "below SEGMENT_BYTES_MIN");
        assert!(refused(&["--segment-bytes", "8589934592"]), "above u32::MAX");
        assert!(refused(&["--shards", "0"]));
        assert!(refused(&["--listen", "no-such-host.invalid:9092"]));
        assert!(refused(&["--listen", "localhost"]), "no port");
        let ok = EngineConfig::try_parse_from(["engine", "--listen", "localhost:9092", "--segment-bytes", "65536"]);
        let ok = ok.unwrap();
        assert_eq!(
            ok.listen,
            Some("127.0.0.1:9092".parse().unwrap()),
            "localhost resolves, IPv4 first"
        );
        assert_eq!(ok.segment_bytes, SEGMENT_BYTES_MIN);
        // CPUs this process may not run on are named before the data dir is touched.
        let far = EngineConfig::try_parse_from(["engine", "--cpus", "4000-4001"]).unwrap();
        assert!(far.validate().unwrap_err().contains("--cpus names CPU 4000"));
        let here = allowed_cpus();
        assert!(!here.is_empty(), "this process runs somewhere");
        let cpus = here[0].to_string();
        assert!(EngineConfig::try_parse_from(["engine", "--cpus", cpus.as_str()])
            .unwrap()
            .validate()
            .is_ok());
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!("0-3".parse::<CpuList>().unwrap().0, vec![0, 1, 2, 3]);
        assert_eq!("0,2".parse::<CpuList>().unwrap().0, vec![0, 2]);
        assert_eq!("1, 4-5".parse::<CpuList>().unwrap().0, vec![1, 4, 5]);
        assert!("3-1".parse::<CpuList>().is_err());
        assert!("x".parse::<CpuList>().is_err());
        assert!("".parse::<CpuList>().is_err());
    }

    #[test]
    fn fsync_policies_parse_and_print() {
        for text in ["always", "never", "interval:5"] {
            assert_eq!(text.parse::<FsyncPolicy>().unwrap().to_string(), text);
        }
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn peer_lists_parse() {
        let peers: PeerList = "1@127.0.0.1:19092, 2@localhost:19093".parse().unwrap();
        assert_eq!(peers.0.get(&1).map(String::as_str), Some("127.0.0.1:19092"));
        assert_eq!(peers.0.get(&2).map(String::as_str), Some("localhost:19093"));
        assert!("1@a:1,1@b:2".parse::<PeerList>().is_err());
        assert!("x@a:1".parse::<PeerList>().is_err());
        assert!("1@a".parse::<PeerList>().is_err());
        assert!("".parse::<PeerList>().is_err());
    }

    #[test]
    fn limits_are_checked_against_each_other() {
        assert!(EngineConfig::parse_from(["engine"]).validate().is_ok());
        let small_memory =
            EngineConfig::parse_from(["engine", "--max-frame-bytes", "2000", "--request-memory-bytes", "1000"]);
        assert!(small_memory.validate().unwrap_err().contains("--request-memory-bytes"));
        let no_connections = EngineConfig::parse_from(["engine", "--max-connections", "0"]);
        assert!(no_connections.validate().unwrap_err().contains("--max-connections"));
        let config = EngineConfig::parse_from(["engine", "--shards", "3", "--max-connections", "10"]);
        assert_eq!(config.connections_per_shard(), 4);
    }

    #[test]
    fn node_ids_stay_below_the_shard_stride() {
        assert!(EngineConfig::try_parse_from(["engine", "--node-id", "999"]).is_ok());
        assert!(EngineConfig::try_parse_from(["engine", "--node-id", "1000"]).is_err());
        assert!(EngineConfig::try_parse_from(["engine", "--node-id", "-1"]).is_err());
    }

    #[test]
    fn shard_listeners_parse_and_advertised_ports_are_read() {
        let config = EngineConfig::parse_from(["engine", "--shard-listeners", "shared", "--advertised-addr", "h:7"]);
        assert_eq!(config.shard_listeners, ShardListeners::Shared);
        let listeners = config.listeners_resolved().unwrap();
        assert_eq!(listeners[0].advertised, Some(("h".to_string(), Some(7))));
        let config = EngineConfig::parse_from(["engine", "--advertised-addr", "h"]);
        assert_eq!(config.shard_listeners, ShardListeners::Own);
        let listeners = config.listeners_resolved().unwrap();
        assert_eq!(listeners[0].advertised, Some(("h".to_string(), None)));
        assert!(EngineConfig::try_parse_from(["engine", "--shard-listeners", "x"]).is_err());
    }

    /// The configuration the engine's command line `args` give.
    fn parse(args: &[&str]) -> Result<EngineConfig, clap::Error> {
        let mut all = vec!["engine"];
        all.extend_from_slice(args);
        EngineConfig::try_parse_from(all)
    }

    #[test]
    fn mqtt_listens_on_loopback_by_default_and_can_be_turned_off() {
        let default = parse(&[]).unwrap();
        assert_eq!(default.mqtt_listen, MqttListen(Some("127.0.0.1:1883".parse().unwrap())));
        assert_eq!(default.mqtt_kafka_topic, "mqtt");
        assert_eq!(parse(&["--mqtt-listen", "none"]).unwrap().mqtt_listen, MqttListen(None));
        assert_eq!(parse(&["--mqtt-listen", "off"]).unwrap().mqtt_listen, MqttListen(None));
        let open = parse(&["--mqtt-listen", "0.0.0.0:1883"]).unwrap();
        assert!(open.validate().unwrap_err().contains("MQTT listener on non-loopback"));
        let allowed = parse(&["--mqtt-listen", "0.0.0.0:1883", "--allow-insecure"]).unwrap();
        assert!(allowed.validate().is_ok());
        let clash = parse(&["--mqtt-listen", "127.0.0.1:9092"]).unwrap();
        assert!(
            clash.validate().unwrap_err().contains("--mqtt-listen"),
            "the Kafka port"
        );
        let clash = parse(&["--mqtt-listen", "127.0.0.1:9644"]).unwrap();
        assert!(clash.validate().unwrap_err().contains("share a port"));
        assert!(parse(&["--mqtt-kafka-topic", "bad topic"]).unwrap().validate().is_err());
    }

    #[test]
    fn the_http_endpoint_defaults_to_loopback_and_can_be_turned_off() {
        let default = parse(&[]).unwrap();
        assert_eq!(default.http_listen, HttpListen(Some("127.0.0.1:9644".parse().unwrap())));
        assert_eq!(default.http_exposure(), None);
        assert_eq!(parse(&["--http-listen", "off"]).unwrap().http_listen, HttpListen(None));
        assert_eq!(parse(&["--http-listen", "OFF"]).unwrap().http_listen, HttpListen(None));
        let host = parse(&["--http-listen", "localhost:0"]).unwrap();
        assert_eq!(host.http_listen, HttpListen(Some("127.0.0.1:0".parse().unwrap())));
        assert!(parse(&["--http-listen", "9644"]).is_err(), "no host");
        assert!(parse(&["--http-listen", "no-such-host.invalid:9644"]).is_err());
        let open = parse(&["--http-listen", "0.0.0.0:9644"]).unwrap();
        assert!(open.http_exposure().unwrap().contains("0.0.0.0:9644"));
        assert!(
            open.listeners_resolved().is_ok(),
            "allowed without --allow-insecure: read-only"
        );
        // Not a Kafka or Raft port of this engine.
        let clash = |args: &[&str]| parse(args).unwrap().validate().err().unwrap_or_default();
        let kafka = clash(&[
            "--listen",
            "127.0.0.1:9092",
            "--shards",
            "2",
            "--http-listen",
            "127.0.0.1:9093",
        ]);
        assert!(kafka.contains("shard 1 of listener PLAINTEXT"), "{kafka}");
        let any = clash(&[
            "--listen",
            "0.0.0.0:9092",
            "--shards",
            "1",
            "--allow-insecure",
            "--http-listen",
            "127.0.0.1:9092",
        ]);
        assert!(any.contains("shard 0"), "{any}");
        let raft = clash(&[
            "--raft-listen",
            "127.0.0.1:19092",
            "--peers",
            "1@127.0.0.1:19092",
            "--http-listen",
            "127.0.0.1:19092",
        ]);
        assert!(raft.contains("Raft"), "{raft}");
        let apart = [
            "--listen",
            "127.0.0.1:9092",
            "--shards",
            "2",
            "--http-listen",
            "127.0.0.1:9094",
        ];
        assert!(parse(&apart).unwrap().validate().is_ok());
        let other_host = [
            "--listen",
            "127.0.0.1:9092",
            "--shards",
            "1",
            "--http-listen",
            "127.0.0.2:9092",
        ];
        assert!(parse(&other_host).unwrap().validate().is_ok());
        let shared = [
            "--listen",
            "127.0.0.1:9092",
            "--shards",
            "2",
            "--shard-listeners",
            "shared",
            "--http-listen",
            "127.0.0.1:9093",
        ];
        assert!(
            parse(&shared).unwrap().validate().is_ok(),
            "shared: one port for all shards"
        );
    }

    fn resolved(args: &[&str]) -> Result<Vec<Listener>, String> {
        let mut all = vec!["engine"];
        all.extend_from_slice(args);
        EngineConfig::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .listeners_resolved()
    }

    #[test]
    fn named_listeners_parse_and_default_to_one_plaintext_listener() {
        let default = resolved(&[]).unwrap();
        assert_eq!(default.len(), 1);
        assert_eq!(default[0].name, "PLAINTEXT");
        assert_eq!(default[0].address, DEFAULT_LISTEN);
        let named = resolved(&[
            "--listener",
            "client=sasl_ssl://127.0.0.1:9300",
            "--listener",
            "INTERNAL=PLAINTEXT://127.0.0.1:9400",
            "--advertised-listener",
            "CLIENT=kafka.example:19300",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--sasl-users-file",
            "users",
        ])
        .unwrap();
        let names: Vec<&str> = named.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["CLIENT", "INTERNAL"], "no default listener beside named ones");
        assert_eq!(named[0].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(named[0].advertised, Some(("kafka.example".to_string(), Some(19300))));
        assert!(
            resolved(&["--listener", "A=TLS://127.0.0.1:1"]).is_err(),
            "unknown protocol"
        );
        assert!(resolved(&["--listener", "A B=SSL://127.0.0.1:1"]).is_err(), "bad name");
        let twice = resolved(&[
            "--listen",
            "127.0.0.1:1",
            "--listener",
            "plaintext=PLAINTEXT://127.0.0.1:5",
        ]);
        assert!(twice.unwrap_err().contains("used twice"));
        let no_cert = resolved(&["--listener", "A=SSL://127.0.0.1:1"]);
        assert!(no_cert.unwrap_err().contains("--tls-cert"));
        let no_users = resolved(&["--listener", "A=SASL_PLAINTEXT://127.0.0.1:1"]);
        assert!(no_users.unwrap_err().contains("--sasl-users-file"));
        let stray = resolved(&["--advertised-listener", "NOPE=h:1"]);
        assert!(stray.unwrap_err().contains("NOPE"));
    }

    #[test]
    fn authorizer_flags_are_checked() {
        let validated = |args: &[&str]| {
            let mut all = vec!["engine"];
            all.extend_from_slice(args);
            EngineConfig::try_parse_from(all).map_err(|e| e.to_string())?.validate()
        };
        assert!(validated(&["--authorizer", "acl", "--super-user", "User:admin"]).is_ok());
        let no_authorizer = validated(&["--super-user", "User:admin"]).unwrap_err();
        assert!(no_authorizer.contains("--authorizer acl"), "{no_authorizer}");
        let malformed = validated(&["--authorizer", "acl", "--super-user", "admin"]).unwrap_err();
        assert!(malformed.contains("TYPE:NAME"), "{malformed}");
        assert!(validated(&["--authorizer", "ranger"]).is_err());
    }

    #[test]
    fn the_inter_broker_listener_and_login_are_checked() {
        let validated = |args: &[&str]| {
            let mut all = vec![
                "engine",
                "--listener",
                "CLIENT=SASL_SSL://127.0.0.1:9092",
                "--listener",
                "BROKER=SASL_PLAINTEXT://127.0.0.1:9192",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--sasl-users-file",
                "users",
            ];
            all.extend_from_slice(args);
            EngineConfig::try_parse_from(all).map_err(|e| e.to_string())?.validate()
        };
        let broker = ["--inter-broker-listener", "broker", "--inter-broker-user", "b"];
        assert!(validated(&broker).is_ok(), "{:?}", validated(&broker));
        let unknown = validated(&["--inter-broker-listener", "OTHER"]).unwrap_err();
        assert!(unknown.contains("which is no listener"), "{unknown}");
        let cluster = ["--peers", "1@127.0.0.1:19092", "--raft-listen", "127.0.0.1:19092"];
        let no_user = validated(&[&cluster[..], &["--inter-broker-listener", "BROKER"]].concat()).unwrap_err();
        assert!(no_user.contains("--inter-broker-user"), "{no_user}");
        // The default, the first listener, speaks TLS: followers need a CA.
        let no_ca = validated(&[&cluster[..], &["--inter-broker-user", "b"]].concat()).unwrap_err();
        assert!(no_ca.contains("--tls-ca"), "{no_ca}");
        // A single node has no followers: nothing is needed for them.
        assert!(validated(&[]).is_ok(), "{:?}", validated(&[]));
        assert!(validated(&["--inter-broker-user", "b", "--tls-ca", "ca.pem"]).is_ok());
        let not_offered = validated(&[&broker[..], &["--sasl-mechanisms", "PLAIN"]].concat()).unwrap_err();
        assert!(not_offered.contains("not in --sasl-mechanisms"), "{not_offered}");
        let plain = EngineConfig::try_parse_from(["engine", "--inter-broker-user", "b"]).unwrap();
        let plain = plain.validate().unwrap_err();
        assert!(plain.contains("for a SASL inter-broker listener"), "{plain}");
    }

    #[test]
    fn unauthenticated_non_loopback_listeners_need_allow_insecure() {
        let open = resolved(&["--listen", "0.0.0.0:0"]).unwrap_err();
        assert!(open.contains("--allow-insecure") && open.contains("0.0.0.0"), "{open}");
        assert!(resolved(&["--listen", "0.0.0.0:0", "--allow-insecure"]).is_ok());
        let tls_only = ["--listener", "A=SSL://0.0.0.0:0", "--tls-cert", "c", "--tls-key", "k"];
        assert!(
            resolved(&tls_only).is_err(),
            "TLS without client certificates authenticates no one"
        );
        let mut mutual = tls_only.to_vec();
        mutual.extend(["--tls-client-auth", "required", "--tls-ca", "ca"]);
        assert!(resolved(&mutual).is_ok());
        let sasl = ["--listener", "A=SASL_PLAINTEXT://0.0.0.0:0", "--sasl-users-file", "u"];
        assert!(resolved(&sasl).is_ok());
        let raft = ["--raft-listen", "0.0.0.0:19092", "--peers", "1@127.0.0.1:19092"];
        assert!(resolved(&raft).unwrap_err().contains("--raft-secret-file"));
        let mut secret = raft.to_vec();
        secret.extend(["--raft-secret-file", "s"]);
        assert!(resolved(&secret).is_ok());
        assert!(
            resolved(&["--listen", "127.0.0.2:0"]).is_ok(),
            "all of 127/8 is loopback"
        );
        let mqtt = ["--mqtt-listen", "0.0.0.0:1883"];
        assert!(resolved(&mqtt).unwrap_err().contains("--mqtt-auth password"));
        let mut passwords = mqtt.to_vec();
        passwords.extend(["--mqtt-auth", "password"]);
        assert!(
            resolved(&passwords).unwrap_err().contains("--sasl-users-file"),
            "passwords need users"
        );
        passwords.extend(["--sasl-users-file", "u"]);
        assert!(resolved(&passwords).is_ok());
        let tls = ["--mqtt-tls-listen", "0.0.0.0:8883"];
        assert!(
            resolved(&tls).unwrap_err().contains("--tls-cert"),
            "TLS needs a certificate"
        );
        let mut tls = tls.to_vec();
        tls.extend(["--tls-cert", "c", "--tls-key", "k"]);
        assert!(
            resolved(&tls).unwrap_err().contains("--mqtt-auth password"),
            "TLS alone authenticates no one"
        );
        tls.extend(["--tls-client-auth", "required", "--tls-ca", "ca"]);
        assert!(resolved(&tls).is_ok(), "client certificates authenticate");
    }

    #[test]
    fn the_raft_secret_file_is_read_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let config = |path: &std::path::Path| {
            EngineConfig::parse_from([
                "engine",
                "--raft-listen",
                "127.0.0.1:19092",
                "--peers",
                "1@127.0.0.1:19092",
                "--raft-secret-file",
                path.to_str().unwrap(),
            ])
        };
        assert!(config(&path).validate().unwrap_err().contains("cannot read"));
        std::fs::write(&path, format!("{}\n", "ab".repeat(15))).unwrap();
        assert!(config(&path).validate().unwrap_err().contains("at least 32"));
        std::fs::write(&path, format!("{}\n", "ab".repeat(16))).unwrap();
        let secret = config(&path).cluster_secret().unwrap().unwrap();
        assert_eq!(secret, ClusterSecret::new("ab".repeat(16).into_bytes()).unwrap());
    }

    #[test]
    fn shards_default_to_the_cpu_list_and_wrap() {
        let config = EngineConfig::parse_from(["engine", "--cpus", "0,2"]);
        assert_eq!(config.shard_count(), 2);
        assert_eq!(config.shard_cpus(), vec![0, 2]);
        let config = EngineConfig::parse_from(["engine", "--cpus", "1", "--shards", "3"]);
        assert_eq!(config.shard_cpus(), vec![1, 1, 1]);
    }
}
