//! The thin seam over glommio: starting one pinned executor per shard, wiring
//! the cross-shard channels, the accept loop, signals and graceful shutdown.
//! Nothing else in the engine creates executors or channels between cores.

use std::{rc::Rc, sync::Arc, time::Duration};

use futures_lite::future;
use glommio::{
    channels::shared_channel::{self, SharedReceiver, SharedSender},
    LocalExecutorBuilder, Placement,
};
use shardline_net::{ClientAuth, ConnectionConfig, TlsAcceptor, TlsConnector, TlsSettings};
use shardline_raft::{BrokerInfo, MetaError, MetadataConfig, MetadataGroup, NewTopic};

use crate::{
    config::{EngineConfig, Listener, TlsClientAuth},
    connections::{Connections, ListenerSecurity},
    kafka::KafkaHandler,
    listeners::ShardListener,
    sasl::SaslSettings,
    shard::{describe_durability, Shard, ShardTask, MESH_QUEUE_BOUND},
};

/// Longest a shard waits for in-flight requests at shutdown.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(5);
/// How often each shard applies retention to its partitions.
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// The cleaner's share of a shard's CPU against the default queue's 1000
/// when both have work: compaction is the lowest I/O class (produce >
/// replication > catch-up reads > compaction), it only has to keep up.
const CLEANER_SHARES: usize = 50;
/// Entries between metadata snapshots.
const METADATA_SNAPSHOT_EVERY_ENTRIES: u64 = 1000;

/// One shard's socket of one listener, and what the listener speaks.
pub(crate) struct Endpoint {
    security: Arc<ListenerSecurity>,
    socket: ShardListener,
}

/// Why the engine could not start or stopped with an error.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Runs the broker until SIGINT/SIGTERM, then shuts down gracefully.
pub fn run(config: EngineConfig) -> Result<(), StartError> {
    config.validate().map_err(StartError)?;
    let config = Arc::new(config);
    let shards = config.shard_count();
    let listeners = config.listeners_resolved().map_err(StartError)?;
    for exposure in config.insecure_exposures(&listeners) {
        tracing::warn!("--allow-insecure: {exposure}");
    }
    let tls = tls_acceptor(&config, &listeners)?;
    let sasl = sasl_settings(&config, &listeners)?;
    let mqtt_acl = mqtt_acl(&config)?;
    let inter_broker = Arc::new(crate::inter_broker::InterBroker::new(&config, &listeners).map_err(StartError)?);
    if config.authorizer == crate::config::AuthorizerKind::Acl {
        tracing::info!(
            super_users = ?config.super_users,
            allow_everyone_if_no_acl_found = config.allow_everyone_if_no_acl_found,
            "authorizer: ACLs (from the metadata group)"
        );
    }
    // Ports first: a port in use stops the start before the data dir is touched.
    let bound = crate::listeners::bind_all(&config, &listeners, shards)?;
    let http = crate::http::bind(&config)?;
    let mqtt = crate::mqtt::bind(&config, shards)?;
    if let Some(exposure) = config.http_exposure() {
        tracing::warn!("{exposure}");
    }
    let advertised = bound
        .iter()
        .map(crate::listeners::advertised)
        .collect::<Result<Vec<_>, _>>()?;
    shardline_log::durable::create_dir_durably(&config.data_dir)
        .map_err(|e| StartError(format!("cannot create data dir {}: {e}", config.data_dir.display())))?;
    let _lock = lock_data_dir(&config.data_dir)?;
    raise_open_files_limit();
    keep_freed_memory_for_reuse();
    let node_id = u64::try_from(config.node_id).map_err(|_| StartError("--node-id must be ≥ 0".into()))?;
    let mut meta_config = MetadataConfig::new(node_id, config.data_dir.join("meta"));
    meta_config.snapshot_every_entries = METADATA_SNAPSHOT_EVERY_ENTRIES;
    meta_config.raft_listen = config.raft_listen;
    meta_config.peers = config.peers.as_ref().map(|p| p.0.clone()).unwrap_or_default();
    meta_config.broker_session_timeout_ms = config.broker_session_timeout_ms;
    meta_config.broker_heartbeat_interval_ms = config.broker_heartbeat_interval_ms;
    meta_config.cluster_secret = config.cluster_secret().map_err(StartError)?;
    let voters = meta_config.peers.len().max(1);
    let meta = MetadataGroup::start(meta_config).map_err(|e| StartError(format!("metadata group: {e}")))?;
    // The file's users, then those stored through the metadata group.
    let sasl = sasl.map(|settings| {
        Arc::new(SaslSettings {
            users: settings.users.with_metadata(meta.clone()),
            mechanisms: settings.mechanisms,
            session_lifetime: settings.session_lifetime,
        })
    });
    let cpus = config.shard_cpus();
    // The first listener is the one other brokers use (followers fetch
    // through it): it is the registration's host, port and shard ports.
    let first = advertised
        .first()
        .cloned()
        .ok_or_else(|| StartError("no Kafka listener".to_string()))?;
    future::block_on(meta.register_broker(BrokerInfo {
        node_id: config.node_id,
        host: first.host.clone(),
        port: first.port,
        shards: u32::try_from(shards).unwrap_or(u32::MAX),
        fenced: false,
        shard_ports: first.shard_ports.clone(),
        listeners: advertised.clone(),
    }))
    .map_err(|e| StartError(format!("registering broker: {e}")))?;
    future::block_on(create_internal_topic(
        &meta,
        crate::coordinator::OFFSETS_TOPIC,
        crate::coordinator::OFFSETS_PARTITIONS_PER_SHARD,
        shards,
        voters,
    ))?;
    future::block_on(create_internal_topic(
        &meta,
        crate::coordinator::transactions::TRANSACTIONS_TOPIC,
        crate::coordinator::transactions::TRANSACTIONS_PARTITIONS_PER_SHARD,
        shards,
        voters,
    ))?;

    tracing::info!(
        shards,
        cpus = ?cpus,
        io_uring_buffers = %buffer_mode(&config, shards),
        data_dir = %config.data_dir.display(),
        listeners = %describe_listeners(&listeners, &advertised),
        mqtt = %crate::mqtt::describe(&mqtt),
        http = %crate::http::describe(http.as_ref()),
        fsync = %describe_durability(config.fsync.0),
        "shardline engine starting"
    );

    // Full mesh of bounded channels: senders[i][j] carries work from shard i to shard j.
    let mut senders: Vec<Vec<Option<SharedSender<ShardTask>>>> = (0..shards).map(|_| Vec::new()).collect();
    let mut receivers: Vec<Vec<SharedReceiver<ShardTask>>> = (0..shards).map(|_| Vec::new()).collect();
    for (i, row) in senders.iter_mut().enumerate() {
        for (j, inbox) in receivers.iter_mut().enumerate() {
            if i == j {
                row.push(None);
            } else {
                let (sender, receiver) = shared_channel::new_bounded(MESH_QUEUE_BOUND);
                row.push(Some(sender));
                inbox.push(receiver);
            }
        }
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Signals stop the engine, and so does a shard that fails (below).
    let stop = Arc::new(stop);
    spawn_signal_thread(Arc::clone(&stop), tls.clone(), inter_broker.tls().cloned())?;

    // Each shard's sockets: one per listener, with what the listener speaks.
    let mut shard_endpoints: Vec<Vec<Endpoint>> = (0..shards).map(|_| Vec::new()).collect();
    for bound_listener in bound {
        let security = Arc::new(ListenerSecurity {
            name: bound_listener.listener.name.clone(),
            protocol: bound_listener.listener.protocol,
            tls: tls.clone().filter(|_| bound_listener.listener.protocol.tls()),
            sasl: sasl.clone().filter(|_| bound_listener.listener.protocol.sasl()),
        });
        for (endpoints, socket) in shard_endpoints.iter_mut().zip(bound_listener.shards) {
            endpoints.push(Endpoint {
                security: Arc::clone(&security),
                socket,
            });
        }
    }

    let mut handles = Vec::new();
    let mut http = http;
    // MQTT checks CONNECT passwords against the SASL users, if asked to.
    let mqtt_users = sasl
        .clone()
        .filter(|_| config.mqtt_auth == crate::config::MqttAuth::Password);
    let mqtt = mqtt.into_iter().map(|sockets| {
        sockets
            .into_iter()
            .map(|socket| socket.with_security(mqtt_users.clone(), tls.clone(), mqtt_acl.clone()))
            .collect::<Vec<_>>()
    });
    let shard_sockets = shard_endpoints.into_iter().zip(mqtt);
    for (id, ((row, inbox), (endpoints, mqtt))) in senders.into_iter().zip(receivers).zip(shard_sockets).enumerate() {
        let cpu = cpus.get(id).copied().unwrap_or(0);
        // Shard 0 serves the HTTP endpoint.
        let http = if id == 0 { http.take() } else { None };
        let config = Arc::clone(&config);
        let meta = meta.clone();
        let inter_broker = Arc::clone(&inter_broker);
        let stopped = stopped.clone();
        let stop = Arc::clone(&stop);
        let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{id}"))
            .io_memory(config.io_memory);
        if config.spin_before_park_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(config.spin_before_park_us));
        }
        let handle = builder
            .spawn(move || async move {
                let result = shard_main(
                    id,
                    config,
                    meta,
                    inter_broker,
                    endpoints,
                    mqtt,
                    http,
                    row,
                    inbox,
                    stopped,
                )
                .await;
                // A shard that cannot serve (a listener it could not
                // start, say) stops the whole engine at once rather than
                // leaving it running without that shard.
                if let Err(error) = &result {
                    tracing::error!(shard = id, %error, "shard failed; stopping the engine");
                    let _ = stop.send(true);
                }
                result
            })
            .map_err(|e| StartError(format!("starting shard {id} on cpu {cpu}: {e}")))?;
        handles.push(handle);
    }
    let mut failure = None;
    for (id, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(StartError(format!("shard {id}: {e}"))),
            Err(e) => failure = Some(StartError(format!("shard {id} executor: {e}"))),
        }
    }
    if let Err(e) = future::block_on(meta.shutdown()) {
        tracing::warn!(error = %e, "metadata group shutdown");
    }
    tracing::info!("shardline engine stopped");
    failure.map_or(Ok(()), Err)
}

/// Replicas of the internal `__consumer_offsets` topic in a cluster, at most.
const OFFSETS_REPLICATION_FACTOR_MAX: usize = 3;

/// How long a starting cluster node waits for enough brokers to register
/// before creating `__consumer_offsets` with fewer replicas.
const OFFSETS_TOPIC_WAIT: Duration = Duration::from_secs(30);

/// Creates an internal topic (`__consumer_offsets`, `__transaction_state`)
/// if it is missing. Its partition count is fixed at creation (a group's or
/// transactional id's partition is a hash of its name modulo that count);
/// its log is fsynced on every write (a commit is acknowledged only once
/// durable), compacted, and never expires by retention.
async fn create_internal_topic(
    meta: &MetadataGroup,
    name: &str,
    per_shard: i32,
    shards: usize,
    voters: usize,
) -> Result<(), StartError> {
    if meta.image().topics.contains_key(name) {
        return Ok(());
    }
    // In a cluster the internal topic is replicated on up to 3 brokers: wait
    // (bounded) until that many have registered, as Kafka waits for
    // offsets.topic.replication.factor brokers.
    let replicas_wanted = voters.min(OFFSETS_REPLICATION_FACTOR_MAX);
    let deadline = std::time::Instant::now() + OFFSETS_TOPIC_WAIT;
    loop {
        let image = meta.image();
        if image.topics.contains_key(name) {
            return Ok(());
        }
        let live = image.brokers.values().filter(|b| !b.fenced).count();
        if live >= replicas_wanted || std::time::Instant::now() >= deadline {
            break;
        }
        // Start-up runs on the main thread, before any executor exists.
        std::thread::sleep(Duration::from_millis(100));
    }
    let live = meta.image().brokers.values().filter(|b| !b.fenced).count();
    let replication_factor = i16::try_from(replicas_wanted.min(live).max(1)).unwrap_or(1);
    let partitions = i32::try_from(shards).unwrap_or(1).saturating_mul(per_shard).max(1);
    let configs = [
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("shardline.fsync", "always"),
        ("cleanup.policy", "compact"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let topic = NewTopic {
        name: name.to_string(),
        partitions,
        replication_factor,
        configs,
        assignments: Vec::new(),
    };
    match meta.create_topic(topic).await {
        Ok(_) => {
            tracing::info!(partitions, "created the internal topic {name}");
            Ok(())
        }
        Err(MetaError::TopicExists(_)) => Ok(()),
        Err(e) => Err(StartError(format!("creating {name}: {e}"))),
    }
}

/// Takes an exclusive `flock` on `<data_dir>/.lock` for the life of the
/// process: two engines on one data directory would corrupt it.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StartError(format!("opening {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        return Err(StartError(format!(
            "data dir {} is in use by another engine (lock {} is held)",
            data_dir.display(),
            path.display()
        )));
    }
    Ok(file)
}

/// Requests up to this size are allocated from malloc's arenas, not mmap'd.
const MALLOC_MMAP_THRESHOLD_BYTES: libc::c_int = 16 << 20;
/// Free memory at the top of an arena is returned to the kernel only past this.
const MALLOC_TRIM_THRESHOLD_BYTES: libc::c_int = 64 << 20;

/// Every Produce request's frame is one allocation of its size (hundreds of
/// KiB under load), freed once its batches are written. With glibc's default
/// (dynamic) thresholds each such allocation grew a shard's arena and each free
/// trimmed it again: a page fault and a kernel page clear per 4 KiB, and an
/// unmap with a TLB shootdown to the other cores per request (≈ 15 % of the
/// engine's CPU at full speed in a profile). Fixed thresholds keep up to
/// `MALLOC_TRIM_THRESHOLD_BYTES` of freed memory per arena for the next frame.
fn keep_freed_memory_for_reuse() {
    // SAFETY: mallopt only changes malloc's tunables; called before any shard
    // thread exists.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES) == 1
    };
    if !ok {
        tracing::warn!("could not set malloc thresholds; large requests will page-fault more");
    }
}

/// Raises the soft open-files limit to the hard one: every partition holds a
/// segment file open, and every client a socket.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!(
                    soft = limit.rlim_cur,
                    hard = limit.rlim_max,
                    "could not raise the open-files limit"
                );
            }
        }
    }
}

fn buffer_mode(config: &EngineConfig, shards: usize) -> String {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    let per_shard = config.io_memory.max(64 << 10);
    let need = per_shard.saturating_mul(shards) as u64;
    if root {
        format!(
            "registered ({} KiB/shard; running as root, memlock not enforced)",
            per_shard >> 10
        )
    } else if ok && need <= limit.rlim_cur {
        format!(
            "registered ({} KiB/shard, {} KiB of memlock limit {} KiB)",
            per_shard >> 10,
            need >> 10,
            limit.rlim_cur >> 10
        )
    } else {
        format!(
            "may fall back to unregistered ({} KiB/shard × {shards} over memlock limit {} KiB; lower --io-memory)",
            per_shard >> 10,
            limit.rlim_cur >> 10
        )
    }
}

fn spawn_signal_thread(
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    tls: Option<TlsAcceptor>,
    inter_broker_tls: Option<TlsConnector>,
) -> Result<(), StartError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| StartError(format!("installing signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload_tls(tls.as_ref(), inter_broker_tls.as_ref());
                    continue;
                }
                seen += 1;
                if seen == 1 {
                    tracing::info!(
                        signal,
                        "shutting down: no new connections, finishing in-flight requests"
                    );
                    let _ = stop.send(true);
                } else {
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(130);
                }
            }
        })
        .map_err(|e| StartError(format!("spawning signal thread: {e}")))?;
    Ok(())
}

/// SIGHUP: reads the TLS certificate, key and client CA again; connections
/// accepted (and, for followers, made) from now on get them. A failed
/// reload keeps the old ones.
fn reload_tls(tls: Option<&TlsAcceptor>, inter_broker_tls: Option<&TlsConnector>) {
    if let Some(connector) = inter_broker_tls {
        match connector.reload() {
            Ok(()) => tracing::info!("SIGHUP: reloaded the inter-broker TLS client certificate and CA"),
            Err(error) => tracing::error!(%error, "SIGHUP: inter-broker TLS reload failed; keeping the previous one"),
        }
    }
    let Some(tls) = tls else {
        tracing::info!("SIGHUP: no TLS listener, nothing to reload");
        return;
    };
    match tls.reload() {
        Ok(()) => tracing::info!(
            cert = %tls.settings().cert_chain_pem.display(),
            "SIGHUP: reloaded the TLS certificate; new connections get it"
        ),
        Err(error) => tracing::error!(%error, "SIGHUP: TLS reload failed; still serving the previous certificate"),
    }
}

/// The TLS acceptor of the SSL and SASL_SSL listeners, if there are any.
fn tls_acceptor(config: &EngineConfig, listeners: &[Listener]) -> Result<Option<TlsAcceptor>, StartError> {
    if !listeners.iter().any(|listener| listener.protocol.tls()) && config.mqtt_tls_listen.0.is_none() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Err(StartError(
            "SSL and SASL_SSL listeners need --tls-cert and --tls-key".to_string(),
        ));
    };
    let settings = TlsSettings {
        cert_chain_pem: cert.clone(),
        key_pem: key.clone(),
        client_ca_pem: config.tls_ca.clone(),
        client_auth: match config.tls_client_auth {
            TlsClientAuth::None => ClientAuth::None,
            TlsClientAuth::Requested => ClientAuth::Requested,
            TlsClientAuth::Required => ClientAuth::Required,
        },
    };
    TlsAcceptor::new(settings)
        .map(Some)
        .map_err(|e| StartError(format!("TLS: {e}")))
}

/// The SASL users and mechanisms of the SASL listeners, if there are any.
fn sasl_settings(config: &EngineConfig, listeners: &[Listener]) -> Result<Option<SaslSettings>, StartError> {
    let mqtt_passwords = config.mqtt_auth == crate::config::MqttAuth::Password;
    if !listeners.iter().any(|listener| listener.protocol.sasl()) && !mqtt_passwords {
        return Ok(None);
    }
    let Some(path) = &config.sasl_users_file else {
        return Err(StartError("SASL listeners need --sasl-users-file".to_string()));
    };
    let users = crate::sasl::UserStore::load(path).map_err(|e| StartError(format!("SASL users: {e}")))?;
    tracing::info!(users = users.len(), file = %path.display(), "loaded SASL users");
    Ok(Some(SaslSettings {
        users,
        mechanisms: config.sasl_mechanisms.0.clone(),
        session_lifetime: (config.sasl_session_lifetime_ms > 0)
            .then(|| Duration::from_millis(config.sasl_session_lifetime_ms)),
    }))
}

/// The rules of `--mqtt-acl-file`, read once (`None` without the flag); a
/// file that cannot be read or does not parse stops the start.
fn mqtt_acl(config: &EngineConfig) -> Result<Option<Arc<crate::mqtt::TopicAcl>>, StartError> {
    let Some(path) = &config.mqtt_acl_file else {
        return Ok(None);
    };
    let refuse = |why: String| StartError(format!("--mqtt-acl-file {}: {why}", path.display()));
    let size = std::fs::metadata(path).map_err(|e| refuse(e.to_string()))?.len();
    if size > crate::mqtt::ACL_FILE_BYTES_MAX {
        return Err(refuse(format!("larger than {} bytes", crate::mqtt::ACL_FILE_BYTES_MAX)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
    let acl = crate::mqtt::TopicAcl::parse(&text).map_err(|e| refuse(e.to_string()))?;
    tracing::info!(file = %path.display(), "loaded MQTT topic ACLs");
    Ok(Some(Arc::new(acl)))
}

/// One line naming each listener, its protocol, address and what clients are told.
fn describe_listeners(listeners: &[Listener], advertised: &[shardline_raft::BrokerListener]) -> String {
    listeners
        .iter()
        .zip(advertised)
        .map(|(listener, told)| {
            format!(
                "{}={}://{} (advertised {}:{}, shard ports {:?})",
                listener.name,
                listener.protocol.name(),
                listener.address,
                told.host,
                told.port,
                told.shard_ports
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[expect(clippy::too_many_arguments, reason = "one call site, in `run`, naming each part")]
async fn shard_main(
    id: usize,
    config: Arc<EngineConfig>,
    meta: MetadataGroup,
    inter_broker: Arc<crate::inter_broker::InterBroker>,
    endpoints: Vec<Endpoint>,
    mqtt: Vec<crate::mqtt::MqttSocket>,
    http: Option<crate::http::HttpSocket>,
    outbox: Vec<Option<SharedSender<ShardTask>>>,
    inbox: Vec<SharedReceiver<ShardTask>>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    // Each end of a cross-core channel waits for its peer to connect, so every
    // shard connects all its ends at once (one at a time would deadlock).
    let senders = futures_util::future::join_all(outbox.into_iter().map(|sender| async move {
        match sender {
            Some(sender) => Some(sender.connect().await),
            None => None,
        }
    }));
    let receivers = futures_util::future::join_all(inbox.into_iter().map(SharedReceiver::connect));
    let (peers, receivers) = futures_util::future::join(senders, receivers).await;
    let shard = Shard::new(id, Arc::clone(&config), meta.clone(), inter_broker, peers);
    for receiver in receivers {
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            while let Some(task) = receiver.recv().await {
                glommio::spawn_local(task(Rc::clone(&shard))).detach();
            }
        })
        .detach();
    }
    // The HTTP endpoint answers from now on (/ready says what is missing).
    if let Some(socket) = http {
        glommio::spawn_local(crate::http::serve(Rc::clone(&shard), socket, stopped.clone())).detach();
    }
    // Open this shard's partitions before taking connections.
    let start_epoch = meta.image().epoch;
    glommio::spawn_local(Rc::clone(&shard).follow_metadata()).detach();
    shard.wait_for_epoch(start_epoch).await;
    glommio::spawn_local(crate::coordinator::run_ticks(Rc::clone(&shard))).detach();
    glommio::spawn_local(crate::coordinator::transactions::run_ticks(Rc::clone(&shard))).detach();
    let retention_shard = Rc::clone(&shard);
    glommio::spawn_local(async move {
        while !retention_shard.is_shutting_down() {
            glommio::timer::sleep(RETENTION_CHECK_INTERVAL).await;
            retention_shard.apply_retention().await;
        }
    })
    .detach();
    // The log cleaner, in its own low-share task queue: it yields every
    // MiB it reads, and the scheduler then favours every other task.
    let cleaner_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(CLEANER_SHARES),
        glommio::Latency::NotImportant,
        "log-cleaner",
    );
    let cleaner_shard = Rc::clone(&shard);
    let cleaner_backoff = Duration::from_millis(config.log_cleaner_backoff_ms.max(1));
    glommio::spawn_local_into(
        async move {
            while !cleaner_shard.is_shutting_down() {
                glommio::timer::sleep(cleaner_backoff).await;
                cleaner_shard.clean_logs().await;
            }
        },
        cleaner_queue,
    )
    .map_err(|e| format!("starting the log cleaner: {e}"))?
    .detach();

    let in_flight = Rc::clone(&shard.probe.requests_in_flight);
    let connection_config = ConnectionConfig::default()
        .with_max_frame_bytes(config.max_frame_bytes)
        .with_in_flight_max(config.max_in_flight_requests_per_connection)
        .with_request_entries_max(config.max_request_entries)
        .with_capture_dir(config.capture_frames.clone());
    let connections = Connections::new(
        config.connections_per_shard(),
        Duration::from_millis(config.connections_max_idle_ms),
        config.request_memory_bytes,
        Rc::clone(&shard.probe.connections),
    );
    let sweeping = Rc::clone(&shard);
    glommio::spawn_local(Rc::clone(&connections).sweep_idle(move || sweeping.is_shutting_down())).detach();
    let authorizer = Rc::new(config.authorizer());
    let mut accepting = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let listener = endpoint
            .socket
            .listen()
            .map_err(|e| format!("listening on {}: {e}", endpoint.security.name))?;
        tracing::info!(
            shard = id,
            listener = %endpoint.security.name,
            address = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
            "Kafka listener listening"
        );
        let handler_for = KafkaHandler::for_listener(
            Rc::clone(&shard),
            Rc::clone(&in_flight),
            Rc::from(endpoint.security.name.as_str()),
            Rc::clone(&authorizer),
        );
        accepting.push(accept_loop(
            id,
            listener,
            endpoint.security,
            handler_for,
            Rc::clone(&connections),
            connection_config.clone(),
            stopped.clone(),
        ));
    }
    if !mqtt.is_empty() {
        glommio::spawn_local(crate::mqtt::share_upkeep(Rc::clone(&shard))).detach();
    }
    let mqtt_accepting = async {
        let loops = mqtt
            .into_iter()
            .map(|socket| crate::mqtt::accept_loop(Rc::clone(&shard), socket, stopped.clone(), Rc::clone(&authorizer)));
        futures_util::future::join_all(loops)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, String>>()
            .map(|_| ())
    };
    shard.probe.listeners_bound.set(true);
    tracing::debug!(shard = id, "accepting connections");
    let ((), mqtt_result) = futures_util::future::join(
        async {
            futures_util::future::join_all(accepting).await;
        },
        mqtt_accepting,
    )
    .await;
    mqtt_result?;
    // Connections with nothing unanswered close at once; the others get up to
    // DRAIN_WAIT_MAX to answer what they have (then close as they go quiet).
    let deadline = std::time::Instant::now() + DRAIN_WAIT_MAX;
    // MQTT connections were told to close (and persistent sessions save as
    // they close): the partitions stay open until they have.
    while (in_flight.get() > 0 || connections.close_quiet() > 0 || shard.mqtt.open_connections() > 0)
        && std::time::Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    connections.close_quiet();
    shard.shutdown().await;
    let (refused, closed_idle) = connections.counts();
    tracing::info!(
        shard = id,
        forwarded_partition_requests = shard.probe.forwarded_partition_requests.get(),
        forwarded_group_requests = shard.probe.forwarded_group_requests.get(),
        connections_refused = refused,
        connections_closed_idle = closed_idle,
        "shard stopped"
    );
    Ok(())
}

/// Accepts one listener's connections on one shard until shutdown; each is
/// served as a task of its own (the TLS handshake included, so a slow one
/// holds up no other).
async fn accept_loop(
    shard: usize,
    listener: glommio::net::TcpListener,
    security: Arc<ListenerSecurity>,
    handler_for: Rc<dyn Fn(Rc<crate::acl::Session>) -> KafkaHandler>,
    connections: Rc<Connections>,
    connection_config: ConnectionConfig,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    accept_until_stopped(shard, &listener, &security.name, stopped, |stream| {
        tracing::debug!(
            shard,
            listener = %security.name,
            protocol = security.protocol.name(),
            peer = ?stream.peer_addr().ok(),
            "connection accepted"
        );
        connections.serve(stream, &security, &handler_for, &connection_config);
    })
    .await;
}

/// Accepts on `listener` (named `name` in logs) until `stopped` says so,
/// handing each connection, with TCP_NODELAY set, to `serve`; a failed
/// accept is logged and retried after a short pause. The Kafka and MQTT
/// listeners of every shard run this loop.
pub(crate) async fn accept_until_stopped(
    shard: usize,
    listener: &glommio::net::TcpListener,
    name: &str,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    mut serve: impl FnMut(glommio::net::TcpStream),
) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            let _ = stopped.wait_for(|stop| *stop).await;
            None
        })
        .await;
        let Some(accepted) = accepted else { break };
        match accepted {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                serve(stream);
            }
            Err(e) => {
                tracing::warn!(shard, listener = %name, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
