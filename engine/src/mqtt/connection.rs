//! One MQTT connection's task, on the shard that accepted it: reads and
//! decodes packets (`PacketReader`, on this same task, a packet at a time
//! as the session takes them), feeds them, the deliveries of the shard's
//! feed, control messages and ticks to its [`Session`], and carries out the
//! actions the session returns — writes, the client-id claim on the id's
//! home shard, appends on the partition's owner, subscription changes in
//! the shard's table. While the session waits (for an append, say), the
//! client's packets wait in the socket; the next round takes what one read
//! brings.
//!
//! A plain socket is read and written through two descriptors of the same
//! socket (a `dup`), one per half, so the halves are separate streams. A
//! TLS stream has one rustls state for both directions: its halves share it
//! (`futures_lite::io::split`).

use std::{
    collections::{BTreeMap, VecDeque},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd},
    rc::Rc,
    sync::Arc,
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::{
    channels::local_channel::{self, LocalReceiver},
    net::TcpStream,
};
use shardline_net::mqtt::{
    decode_packet, encode_packet, shared_filter, MqttDecodeError, Packet, PacketId, QoS, Version,
};

use shardline_log::Offset;
use shardline_raft::AclOperation;

use super::{
    delivery_for, feed, home_shard,
    mapping::Publication,
    publish::{self, APPEND_ROUND_BYTES_MAX, APPEND_ROUND_MAX},
    reason::Refusal,
    session::{Action, Event, Session, SessionLimits},
    sessions, shared,
    stored::Claim,
    topic_acl::{TopicAccess, TopicAcl},
    Control, Delivery, Holder, MqttCounts, Position, Subscription, Unsent, CONTROL_QUEUE_MAX, DELIVERY_QUEUE_MAX,
};
use crate::{
    acl::{Access, Authorizer, Principal, Resource, Session as AclSession},
    sasl::{SaslSettings, ScramServer},
    shard::Shard,
};

/// Bytes read from the socket at once (with a packet cut short, what a
/// connection holds read and not yet handed to its session).
const READ_CHUNK_BYTES: usize = 16 << 10;

/// Deliveries handed to the session before one write, at most.
const DELIVERY_ROUND_MAX: usize = 64;

/// Messages a resumed session is sent from the log at most (those its
/// subscriptions matched while it was away, QoS 1 and 2); later ones are
/// dropped, as a broker drops messages beyond an offline client's queue.
pub(crate) const OFFLINE_MESSAGES_MAX: usize = 1000;

/// What the packet reader hands the session.
enum Inbound {
    Packet(Packet),
    Refused(MqttDecodeError),
}

/// What a connection's listener checks it with.
pub(crate) struct Security {
    /// The users CONNECT passwords are checked against (`None`: none).
    pub(crate) users: Option<Arc<SaslSettings>>,
    /// The TLS acceptor, on the TLS listener.
    pub(crate) tls: Option<shardline_net::TlsAcceptor>,
    /// The broker's authorizer (ACLs on the mapped Kafka topic).
    pub(crate) authorizer: Rc<Authorizer>,
    /// The per-topic rules of `--mqtt-acl-file`, if given.
    pub(crate) topic_acl: Option<Arc<TopicAcl>>,
}

/// Serves `stream` as a task of its own, or closes it at once when the
/// shard already serves its share of MQTT connections.
pub(crate) fn start(shard: &Rc<Shard>, stream: TcpStream, security: Security) {
    let Security {
        users,
        tls,
        authorizer,
        topic_acl,
    } = security;
    let (deliveries, delivered) = local_channel::new_bounded(DELIVERY_QUEUE_MAX);
    let (control, controlled) = local_channel::new_bounded(CONTROL_QUEUE_MAX);
    let peer = stream.peer_addr().ok();
    let Some((id, unsent)) = shard.mqtt.open(deliveries, control) else {
        tracing::warn!(
            ?peer,
            "refusing an MQTT connection: this shard serves its share of --max-connections"
        );
        return;
    };
    let shard = Rc::clone(shard);
    glommio::spawn_local(async move {
        let me = Holder {
            shard: shard.id,
            connection: id,
        };
        let mut connection = Connection {
            shard: Rc::clone(&shard),
            me,
            claimed: None,
            shares: Vec::new(),
            out: Vec::new(),
            scram: None,
            unsent,
            users,
            topic_acl,
            access: Access {
                authorizer,
                session: Rc::new(AclSession::new(peer.map(|peer| peer.ip()), None)),
            },
            backlog: VecDeque::new(),
            replayed_through: None,
            stored: false,
            session_claim: Claim::default(),
        };
        let result = match tls {
            None => {
                // A second descriptor of the socket for the reader task.
                match dup_stream(&stream) {
                    Ok(reading) => connection.serve(reading, stream, delivered, controlled).await,
                    Err(error) => Err(error),
                }
            }
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok((tls, principal)) => {
                    if let Some(subject) = principal {
                        connection.access.session.authenticated(Principal::user(&subject));
                    }
                    let (reading, writing) = futures_lite::io::split(tls);
                    connection.serve(reading, writing, delivered, controlled).await
                }
                Err(error) => {
                    tracing::debug!(?peer, %error, "MQTT TLS handshake failed");
                    Err(error)
                }
            },
        };
        for filter in std::mem::take(&mut connection.shares) {
            connection.leave_share(&filter).await;
        }
        shard.mqtt.close(id);
        if let Some(client_id) = connection.claimed.take() {
            release(&shard, client_id, me).await;
        }
        match result {
            Ok(why) => tracing::debug!(
                ?peer,
                why = why.as_deref().unwrap_or("DISCONNECT"),
                "MQTT connection closed"
            ),
            Err(error) => tracing::debug!(?peer, %error, "MQTT connection lost"),
        }
    })
    .detach();
}

/// The connection task's own state.
struct Connection {
    shard: Rc<Shard>,
    me: Holder,
    /// The client id this connection claimed on its home shard.
    claimed: Option<String>,
    /// The shared subscriptions (`$share/...` filters) it is a member of.
    shares: Vec<String>,
    /// Encoded packets not written yet.
    out: Vec<u8>,
    /// A v5 SCRAM exchange awaiting the client-final message.
    scram: Option<Box<ScramServer>>,
    /// Deliveries with a position the feed queued and this task has not
    /// taken yet, per partition (shared with the shard's table).
    unsent: Rc<Unsent>,
    /// The users a CONNECT's credentials are checked against
    /// (`--mqtt-auth password`; `None`: not checked).
    users: Option<Arc<SaslSettings>>,
    /// The per-topic rules of `--mqtt-acl-file`, handed to the session.
    topic_acl: Option<Arc<TopicAcl>>,
    /// Who the client is (anonymous, its certificate's subject, or the
    /// user its password proved) and the authorizer: publishing needs
    /// Write, subscribing Read, on the mapped Kafka topic.
    access: Access,
    /// A resumed session's offline messages, sent before anything from the
    /// feed.
    backlog: VecDeque<Delivery>,
    /// Where the replay of a resumed session stopped reading, handed to the
    /// session once `backlog` is empty.
    replayed_through: Option<BTreeMap<i32, Offset>>,
    /// Whether a session may be stored under the client id (resumed, or
    /// saved by this connection).
    stored: bool,
    /// This connection's claim on its session, across nodes (`stored.rs`).
    session_claim: Claim,
}

impl Connection {
    /// Runs the connection; returns why the server closed it (`None`: the
    /// client's DISCONNECT), or the I/O error that ended it.
    async fn serve<R, W>(
        &mut self,
        reading: R,
        mut writer: W,
        delivered: LocalReceiver<Delivery>,
        controlled: LocalReceiver<Control>,
    ) -> std::io::Result<Option<String>>
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin,
    {
        let packet_bytes_max = self.shard.config.mqtt_max_packet_bytes;
        let mut packets = PacketReader::new(reading, packet_bytes_max);
        let limits = SessionLimits {
            auth_required: self.users.is_some(),
            topic_acl: self.topic_acl.clone(),
            packet_bytes_max: u32::try_from(packet_bytes_max).unwrap_or(u32::MAX),
            assigned_client_id: format!(
                "shardline-{}-{}-{}",
                self.shard.node_id(),
                self.me.shard,
                self.me.connection
            ),
        };
        let mut session = Session::new(Instant::now(), limits);
        // The timer of the session's next deadline, and that deadline.
        let mut alarm: Option<(Instant, glommio::timer::Timer)> = None;
        let mut pending: VecDeque<Action> = VecDeque::new();
        let result = loop {
            let mut closing = None;
            while let Some(action) = pending.pop_front() {
                match action {
                    Action::Send(packet) => {
                        if matches!(packet, Packet::Publish(_)) {
                            MqttCounts::add(&self.shard.mqtt.counts.delivered, 1);
                        }
                        encode_packet(&packet, session.version().unwrap_or(Version::V311), &mut self.out);
                    }
                    Action::Authenticate { user, password } => {
                        let user = self.authenticate(user, password);
                        if let Some(user) = &user {
                            self.access.session.authenticated(Principal::user(user));
                        }
                        pending.extend(session.handle(Instant::now(), Event::Authenticated { user }));
                    }
                    Action::ScramStart {
                        mechanism,
                        client_first,
                    } => {
                        let server_first = self.scram_start(mechanism, &client_first);
                        pending.extend(session.handle(Instant::now(), Event::ScramChallenge { server_first }));
                    }
                    Action::ScramFinish { client_final } => {
                        let outcome = self.scram_finish(&client_final);
                        pending.extend(session.handle(Instant::now(), Event::ScramFinished { outcome }));
                    }
                    Action::Claim { client_id, clean_start } => {
                        self.claim(client_id.clone()).await;
                        self.shard
                            .mqtt
                            .set_client_id(self.me.connection, &client_id, session.is_persistent());
                        let stored = self.load_session(&client_id, clean_start).await;
                        pending.extend(session.handle(Instant::now(), Event::Claimed { stored }));
                    }
                    Action::Save => {
                        if let Some(stored) = session.snapshot() {
                            let client_id = session.client_id().to_string();
                            if !self.save_session(&client_id, stored).await {
                                pending.extend(session.handle(Instant::now(), Event::TakenOver));
                            }
                        }
                    }
                    Action::Redeliver { packet_id, position } => {
                        let message = read_one(&self.shard, position).await;
                        pending.extend(session.handle(Instant::now(), Event::Redelivery { packet_id, message }));
                    }
                    Action::Replay { cursors, filters } => {
                        let client_id = session.client_id().to_string();
                        self.replay(cursors, &filters, &client_id).await;
                    }
                    Action::Append { message, packet_id } => {
                        let mut round = vec![(message, packet_id)];
                        // Appends queued behind it go with it; so, when nothing else
                        // is queued, do the publications already read.
                        while round.len() < APPEND_ROUND_MAX && matches!(pending.front(), Some(Action::Append { .. })) {
                            if let Some(Action::Append { message, packet_id }) = pending.pop_front() {
                                round.push((message, packet_id));
                            }
                        }
                        let (later, left) = if pending.is_empty() {
                            gather(&mut session, &mut packets, &mut round)
                        } else {
                            (Vec::new(), None)
                        };
                        let (messages, acks): (Vec<_>, Vec<_>) = round
                            .into_iter()
                            .map(|(message, packet_id)| {
                                let qos = message.qos;
                                (message, (qos, packet_id))
                            })
                            .unzip();
                        let outcomes = match self.may(AclOperation::Write) {
                            Ok(()) => publish::append_round(&self.shard, messages).await,
                            Err(error) => vec![Err(Arc::new(error)); messages.len()],
                        };
                        let mut next = VecDeque::new();
                        for ((qos, packet_id), outcome) in acks.into_iter().zip(outcomes) {
                            if let Err(error) = &outcome {
                                tracing::debug!(%error, "MQTT publish not appended");
                            }
                            next.extend(session.handle(
                                Instant::now(),
                                Event::Appended {
                                    packet_id,
                                    qos,
                                    outcome,
                                },
                            ));
                        }
                        next.extend(pending.drain(..));
                        next.extend(later);
                        if let Some(inbound) = left {
                            next.extend(handle_inbound(&mut session, inbound));
                        }
                        pending = next;
                    }
                    Action::Subscribe { filters, retained_for } => {
                        let (shared, own): (Vec<Subscription>, Vec<Subscription>) =
                            filters.into_iter().partition(|s| s.shared().is_some());
                        let mut refused = Vec::new();
                        for subscription in shared {
                            let filter = subscription.filter.clone();
                            if !self.join_share(subscription).await {
                                refused.push(filter);
                            }
                        }
                        if !own.is_empty() {
                            self.shard.mqtt.subscribe(self.me.connection, own);
                            if let Err(error) = super::feed::ensure_running(&self.shard).await {
                                tracing::warn!(%error, "MQTT feed did not start");
                            }
                            // A new subscription's cursors start where the feed is.
                            session.advance_cursors(self.shard.mqtt.progress(self.me.connection));
                        }
                        // Queued now, written after the SUBACK that follows.
                        if !retained_for.is_empty() {
                            self.queue_retained(retained_for).await;
                        }
                        pending.extend(session.handle(Instant::now(), Event::Subscribed { refused }));
                    }
                    Action::Unsubscribe { filters } => {
                        for filter in &filters {
                            self.leave_share(filter).await;
                        }
                        self.shard.mqtt.unsubscribe(self.me.connection, &filters);
                    }
                    Action::Close { why } => closing = Some(why),
                }
            }
            if !self.out.is_empty() {
                // A control message while the socket does not take the bytes
                // (a client that stopped reading) ends the connection at once,
                // with nothing more written.
                let written = future::or(async { Ok(writer.write_all(&self.out).await) }, async {
                    Err(control_event(controlled.recv().await))
                })
                .await;
                match written {
                    Ok(Ok(())) => self.out.clear(),
                    Ok(Err(error)) => break Err(error),
                    Err(event) => {
                        let why = format!("{event:?} while the client was not reading");
                        drop(session.handle(Instant::now(), event));
                        break Ok(Some(why));
                    }
                }
            }
            if let Some(why) = closing {
                break Ok(why);
            }
            assert!(!session.is_closed(), "a closed session ends with a Close action");
            let now = Instant::now();
            if self.backlog.is_empty() {
                if let Some(through) = self.replayed_through.take() {
                    // The replay is done: the feed's deliveries before these
                    // offsets were in it.
                    pending.extend(session.handle(now, Event::Progress(through)));
                    session.advance_cursors(self.shard.mqtt.progress(self.me.connection));
                    continue;
                }
            } else if session.takes_deliveries() {
                // A resumed session's offline messages go before the feed's.
                for _ in 0..DELIVERY_ROUND_MAX {
                    if !session.takes_deliveries() {
                        break;
                    }
                    let Some(delivery) = self.backlog.pop_front() else {
                        break;
                    };
                    pending.extend(session.handle(now, Event::Delivery(delivery)));
                }
                continue;
            }
            let takes = session.takes_deliveries() && self.backlog.is_empty();
            // One timer per deadline, not per event: a timer set for an earlier
            // deadline is kept (it fires early, the session finds nothing due,
            // and the next one is set); only an earlier deadline replaces it.
            match (session.deadline(), &alarm) {
                (Some(deadline), Some((set_for, _))) if *set_for <= deadline => {}
                (Some(deadline), _) => {
                    let timer = glommio::timer::Timer::new(deadline.saturating_duration_since(Instant::now()));
                    alarm = Some((deadline, timer));
                }
                (None, _) => alarm = None,
            }
            let event = future::or(
                async {
                    match packets.next().await {
                        Some(Inbound::Packet(packet)) => Some(Ok(Event::Packet(packet))),
                        Some(Inbound::Refused(error)) => Some(Err(Refusal::Decode(error))),
                        None => None,
                    }
                },
                future::or(
                    async { Some(Ok(control_event(controlled.recv().await))) },
                    future::or(
                        async {
                            if !takes {
                                return future::pending().await;
                            }
                            match delivered.recv().await {
                                Some(delivery) => Some(Ok(Event::Delivery(delivery))),
                                None => Some(Ok(Event::ShuttingDown)),
                            }
                        },
                        async {
                            let Some((_, timer)) = alarm.as_mut() else {
                                return future::pending().await;
                            };
                            timer.await;
                            Some(Ok(Event::Tick))
                        },
                    ),
                ),
            )
            .await;
            let now = Instant::now();
            match event {
                Some(Ok(Event::Delivery(delivery))) => {
                    self.taken(&delivery);
                    pending.extend(session.handle(now, Event::Delivery(delivery)));
                    // Deliveries already queued go out in the same write.
                    for _ in 1..DELIVERY_ROUND_MAX {
                        if !session.takes_deliveries() {
                            break;
                        }
                        let Some(Some(delivery)) = future::poll_once(delivered.recv()).await else {
                            break;
                        };
                        self.taken(&delivery);
                        pending.extend(session.handle(now, Event::Delivery(delivery)));
                    }
                }
                Some(Ok(Event::Packet(Packet::Subscribe(subscribe)))) if self.may(AclOperation::Read).is_err() => {
                    pending.extend(session.deny_subscribe(now, &subscribe));
                }
                Some(Ok(event)) => {
                    if matches!(event, Event::Tick) {
                        alarm = None;
                    }
                    pending.extend(session.handle(now, event));
                }
                Some(Err(refusal)) => pending.extend(session.refuse(refusal)),
                // The client went away (or broke the stream): no will yet.
                None => break Err(std::io::Error::from(std::io::ErrorKind::ConnectionAborted)),
            }
        };
        drop(packets);
        let _ = writer.close().await;
        self.end_session(&mut session).await;
        if let Some((will, delay)) = session.take_will() {
            let will = Publication {
                properties: super::mapping::MessageProperties::of(&will.properties),
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
                client_id: std::sync::Arc::from(session.client_id()),
            };
            if let Err(error) = self.may(AclOperation::Write) {
                tracing::info!(topic = %will.topic, %error, "MQTT will not published");
            } else if !session.topic_allowed(&will.topic, TopicAccess::Write) {
                tracing::info!(topic = %will.topic, "MQTT will not published: --mqtt-acl-file denies its topic");
            } else if delay.is_zero() {
                publish_will(&self.shard, will).await;
            } else {
                // v5 Will Delay: published later unless the client is back.
                let shard = Rc::clone(&self.shard);
                glommio::spawn_local(async move {
                    glommio::timer::sleep(delay).await;
                    let client_id = will.client_id.to_string();
                    let home = home_shard(&client_id, shard.shard_count);
                    let back = shard
                        .invoke_on(home, move |s: Rc<Shard>| async move { s.mqtt.is_held(&client_id) })
                        .await
                        .unwrap_or(false);
                    if back {
                        tracing::debug!(topic = %will.topic, "MQTT will not published: the client is back");
                    } else if !shard.is_shutting_down() {
                        publish_will(&shard, will).await;
                    }
                })
                .detach();
            }
        }
        result
    }

    /// Whether the client may do `operation` on the mapped Kafka topic.
    fn may(&self, operation: AclOperation) -> Result<(), crate::error::EngineError> {
        let image = self.shard.image();
        let topic = &self.shard.config.mqtt_kafka_topic;
        self.access.check(&image, operation, Resource::Topic(topic))
    }

    /// The user whose name and password these are, if they check.
    fn authenticate(&self, user: Option<String>, password: Option<Bytes>) -> Option<String> {
        let users = self.users.as_ref()?;
        let (Some(user), Some(password)) = (user, password) else {
            tracing::info!("MQTT CONNECT without a user name and password refused");
            return None;
        };
        match crate::sasl::check_password(&users.users, &user, &password) {
            Ok(user) => Some(user),
            Err(why) => {
                tracing::info!(%user, why, "MQTT CONNECT refused");
                None
            }
        }
    }

    /// Starts a SCRAM exchange from the client-first message: the
    /// server-first message (`None`: refused, or no users to check against).
    fn scram_start(&mut self, mechanism: crate::sasl::Mechanism, client_first: &[u8]) -> Option<Vec<u8>> {
        let users = self.users.as_ref()?;
        match ScramServer::start(mechanism, &users.users, client_first) {
            Ok((server, server_first)) => {
                self.scram = Some(Box::new(server));
                Some(server_first)
            }
            Err(refused) => {
                tracing::info!(why = refused.0, "MQTT SCRAM login refused");
                None
            }
        }
    }

    /// Checks the client-final message: the user and the server-final
    /// message (`None`: refused). The user becomes the connection's
    /// principal, as a password login's does.
    fn scram_finish(&mut self, client_final: &[u8]) -> Option<(String, Vec<u8>)> {
        let server = self.scram.take()?;
        match server.finish(client_final) {
            Ok((user, server_final)) => {
                self.access.session.authenticated(Principal::user(&user));
                Some((user, server_final))
            }
            Err(refused) => {
                tracing::info!(why = refused.0, "MQTT SCRAM login refused");
                None
            }
        }
    }

    /// A delivery the feed queued was taken off the queue (the shard's
    /// table counts only a persistent session's: the others find nothing).
    fn taken(&self, delivery: &Delivery) {
        let Some(position) = delivery.position else {
            return;
        };
        let mut unsent = self.unsent.borrow_mut();
        if let Some(count) = unsent.get_mut(&position.partition) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                unsent.remove(&position.partition);
            }
        }
    }

    /// After the claim: removes the stored session of `client_id` for a
    /// clean start, or loads it to resume (`None`: none, or it could not be
    /// read, which is logged); either way numbers this connection's claim
    /// one past the stored one's.
    async fn load_session(&mut self, client_id: &str, clean_start: bool) -> Option<super::stored::StoredSession> {
        let now_ms = crate::kafka::unix_now_ms();
        let node_id = self.shard.node_id();
        let loaded = if clean_start {
            sessions::remove_claiming(&self.shard, client_id, node_id, now_ms)
                .await
                .map(|claim| (None, claim))
        } else {
            sessions::resume(&self.shard, client_id, node_id, now_ms).await
        };
        match loaded {
            Ok((stored, claim)) => {
                tracing::debug!(client_id, clean_start, resumed = stored.is_some(), ?claim, cursors = ?stored.as_ref().map(|s| &s.cursors), "MQTT session claimed");
                self.session_claim = claim;
                self.shard.mqtt.set_claim(self.me.connection, claim);
                self.stored = stored.is_some();
                if self.stored {
                    MqttCounts::add(&self.shard.mqtt.counts.sessions_resumed, 1);
                }
                stored
            }
            Err(error) => {
                tracing::warn!(client_id, %error, "MQTT session not loaded; starting a new one");
                None
            }
        }
    }

    /// Stores `stored` as the session of `client_id` (a failure is logged:
    /// the next save tries again). `false` when a connection through
    /// another node has claimed the session since: this one is taken over.
    async fn save_session(&mut self, client_id: &str, stored: super::stored::StoredSession) -> bool {
        self.stored = true;
        tracing::debug!(
            client_id,
            subscriptions = stored.subscriptions.len(),
            cursors = ?stored.cursors,
            in_flight = stored.inflight.len(),
            "saving an MQTT session"
        );
        let claim = self.session_claim;
        match sessions::save(&self.shard, client_id, stored, claim, crate::kafka::unix_now_ms()).await {
            Ok(true) => {
                MqttCounts::add(&self.shard.mqtt.counts.sessions_saved, 1);
                true
            }
            Ok(false) => {
                tracing::info!(
                    client_id,
                    ?claim,
                    "MQTT session claimed by a newer connection; not saved"
                );
                false
            }
            Err(error) => {
                tracing::warn!(client_id, %error, "MQTT session not saved");
                true
            }
        }
    }

    /// At the connection's end: saves a persistent session (its cursors moved
    /// up to where the feed is, where nothing waits for this connection), or
    /// removes the stored one of a session that ends here.
    async fn end_session(&mut self, session: &mut Session) {
        let Some(client_id) = self.claimed.clone() else {
            return;
        };
        if session.is_persistent() {
            session.advance_cursors(self.shard.mqtt.progress(self.me.connection));
            if let Some(stored) = session.snapshot() {
                self.save_session(&client_id, stored).await;
            }
        } else if self.stored {
            if let Err(error) = sessions::remove(&self.shard, &client_id).await {
                tracing::warn!(%client_id, %error, "ended MQTT session not removed");
            }
        }
    }

    /// Reads what `filters` match from `cursors` on (QoS 1 and 2, at most
    /// [`OFFLINE_MESSAGES_MAX`]) into the backlog, and where it stopped.
    async fn replay(&mut self, cursors: BTreeMap<i32, Offset>, filters: &[Subscription], client_id: &str) {
        let now_ms = crate::kafka::unix_now_ms();
        let mut through = BTreeMap::new();
        let mut dropped = 0u64;
        let mut messages = Vec::new();
        for (partition, mut offset) in cursors {
            loop {
                messages.clear();
                let next = match feed::read_messages(&self.shard, partition, offset, &mut messages).await {
                    Ok(next) => next,
                    Err(error) => {
                        tracing::warn!(partition, %error, "MQTT offline messages not read");
                        break;
                    }
                };
                for message in &messages {
                    let Ok(expiry_left_s) = message.expiry_left_s(now_ms) else {
                        continue;
                    };
                    let own = Some(client_id.as_bytes());
                    let Some(delivery) = delivery_for(filters, own, partition, message, expiry_left_s) else {
                        continue;
                    };
                    if delivery.qos == QoS::AtMostOnce {
                        continue;
                    }
                    if self.backlog.len() < OFFLINE_MESSAGES_MAX {
                        self.backlog.push_back(delivery);
                    } else {
                        dropped += 1;
                    }
                }
                if next <= offset {
                    break;
                }
                offset = next;
                glommio::yield_if_needed().await;
            }
            through.insert(partition, offset);
        }
        if dropped > 0 {
            MqttCounts::add(&self.shard.mqtt.counts.offline_dropped, dropped);
            tracing::info!(
                dropped,
                kept = OFFLINE_MESSAGES_MAX,
                "MQTT offline messages beyond the bound dropped"
            );
        }
        assert!(
            self.backlog.len() <= OFFLINE_MESSAGES_MAX,
            "the offline backlog is bounded"
        );
        self.replayed_through = Some(through);
    }

    /// Asks every shard for its retained messages matching `filters` and
    /// queues them for this connection.
    async fn queue_retained(&self, filters: Vec<(String, QoS)>) {
        let shard = &self.shard;
        let asks = (0..shard.shard_count).map(|owner| {
            let filters = filters.clone();
            shard.invoke_on(owner, move |s: Rc<Shard>| async move {
                super::retained::matching(&s, &filters, crate::kafka::unix_now_ms()).await
            })
        });
        for answer in futures_util::future::join_all(asks).await {
            for found in answer.unwrap_or_default() {
                let delivery = Delivery {
                    properties: found.properties.map(|props| Rc::new(*props)),
                    expiry_left_s: found.expiry_left_s,
                    ..Delivery::plain(Rc::from(found.topic), found.payload, found.qos, true)
                };
                shard.mqtt.deliver_to(self.me.connection, delivery);
            }
        }
    }

    /// Joins the share of `subscription` on the share's home shard (and
    /// starts that shard's feed); false when it could not.
    async fn join_share(&mut self, subscription: Subscription) -> bool {
        let Some((name, filter)) = subscription.shared() else {
            return false;
        };
        let home = shared::home_of(name, filter, self.shard.shard_count);
        let member = shared::Member {
            holder: self.me,
            qos: subscription.qos,
            subscription_id: subscription.id,
        };
        let (name, filter) = (name.to_string(), filter.to_string());
        let joined = self
            .shard
            .invoke_on(home, move |s: Rc<Shard>| async move {
                if !s.mqtt.shares.borrow_mut().join(&name, &filter, member) {
                    return Ok(false);
                }
                // The first member here: recorded, and the other nodes' read,
                // before the SUBACK (in a cluster).
                let stored = super::membership::settle(&s, &name, &filter).await;
                let read = s.mqtt.shares.borrow().is_view_read(&name, &filter);
                if stored || !read {
                    super::membership::refresh(&s, &[(name, filter)]).await;
                }
                super::feed::ensure_running(&s).await.map(|()| true)
            })
            .await;
        match joined {
            Ok(Ok(true)) => {}
            // Joined, but the home shard's feed did not start: a member all
            // the same (it leaves when this connection does).
            Ok(Err(error)) => tracing::warn!(filter = %subscription.filter, %error, "MQTT share feed did not start"),
            Ok(Ok(false)) => {
                tracing::warn!(
                    filter = %subscription.filter,
                    "MQTT share not joined: its home shard holds its maximum of shares"
                );
                return false;
            }
            Err(error) => {
                tracing::warn!(filter = %subscription.filter, %error, "MQTT share not joined");
                return false;
            }
        }
        if !self.shares.contains(&subscription.filter) {
            self.shares.push(subscription.filter);
        }
        true
    }

    /// Leaves the share `filter` names, if this connection is a member.
    async fn leave_share(&mut self, filter: &str) {
        let Some((name, inner)) = shared_filter(filter) else {
            return;
        };
        self.shares.retain(|f| f != filter);
        let home = shared::home_of(name, inner, self.shard.shard_count);
        let (name, inner, holder) = (name.to_string(), inner.to_string(), self.me);
        let _ = self
            .shard
            .invoke_on(home, move |s: Rc<Shard>| async move {
                s.mqtt.shares.borrow_mut().leave(&name, &inner, holder);
                // The last member here: this node's record tombstoned.
                super::membership::settle(&s, &name, &inner).await;
            })
            .await;
    }

    /// Claims `client_id` on its home shard for this connection and tells
    /// the connection that held it before (if any) that it was taken over.
    async fn claim(&mut self, client_id: String) {
        let shard = &self.shard;
        let home = home_shard(&client_id, shard.shard_count);
        let me = self.me;
        let id = client_id.clone();
        let previous = shard
            .invoke_on(home, move |s: Rc<Shard>| async move { s.mqtt.claim(id, me) })
            .await;
        self.claimed = Some(client_id);
        if let Ok(Some(previous)) = previous {
            if previous != me {
                let _ = shard
                    .invoke_on(previous.shard, move |s: Rc<Shard>| async move {
                        s.mqtt.take_over(previous.connection).await;
                    })
                    .await;
            }
        }
    }
}

/// Appends a connection's will.
async fn publish_will(shard: &Rc<Shard>, will: Publication) {
    let topic = will.topic.clone();
    for outcome in publish::append_round(shard, vec![will]).await {
        match outcome {
            Ok(()) => tracing::debug!(%topic, "MQTT will published"),
            Err(error) => tracing::warn!(%topic, %error, "MQTT will not published"),
        }
    }
}

/// Lets `client_id` go on its home shard (unless a newer connection has it).
async fn release(shard: &Rc<Shard>, client_id: String, me: Holder) {
    let home = home_shard(&client_id, shard.shard_count);
    let _ = shard
        .invoke_on(home, move |s: Rc<Shard>| async move { s.mqtt.release(&client_id, me) })
        .await;
}

/// The message at `position` of the mapped topic, if the log still holds it.
async fn read_one(shard: &Rc<Shard>, position: Position) -> Option<(std::sync::Arc<str>, Bytes)> {
    let mut messages = Vec::new();
    feed::read_messages(shard, position.partition, position.offset, &mut messages)
        .await
        .ok()?;
    messages
        .into_iter()
        .find(|message| message.offset == position.offset)
        .map(|message| (std::sync::Arc::from(&*message.topic), message.payload))
}

/// A second descriptor of `stream`'s socket, as a stream of its own (the
/// reading half).
fn dup_stream(stream: &TcpStream) -> std::io::Result<TcpStream> {
    // SAFETY: the descriptor is `stream`'s, open for as long as `stream`
    // lives, and only borrowed here to duplicate it.
    let reading = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned()?;
    // SAFETY: `reading` is an open descriptor of the same connected TCP
    // socket, owned from here on by the returned stream.
    Ok(unsafe { TcpStream::from_raw_fd(reading.into_raw_fd()) })
}

/// Publications already read join `round` while the
/// session answers each with an append alone (and the round has room).
/// Returns the actions of a publication the session answered otherwise (a
/// refusal, a repeated QoS 2 identifier), to carry out after the round's
/// acknowledgements, and the first inbound item that is not a publication,
/// to hand the session after them (so a DISCONNECT right behind a
/// PUBLISH still finds it acknowledged).
fn gather<R: AsyncRead + Unpin>(
    session: &mut Session,
    packets: &mut PacketReader<R>,
    round: &mut Vec<(Publication, Option<PacketId>)>,
) -> (Vec<Action>, Option<Inbound>) {
    let mut bytes: usize = round.iter().map(|(message, _)| message.record_bytes_max()).sum();
    while round.len() < APPEND_ROUND_MAX && bytes < APPEND_ROUND_BYTES_MAX {
        // Nothing whole read yet (or the stream ended): the round is complete.
        let Some(inbound) = packets.buffered() else {
            break;
        };
        let Inbound::Packet(Packet::Publish(publish)) = inbound else {
            return (Vec::new(), Some(inbound));
        };
        let mut later = Vec::new();
        for action in session.handle(Instant::now(), Event::Packet(Packet::Publish(publish))) {
            match action {
                Action::Append { message, packet_id } if later.is_empty() => {
                    bytes += message.record_bytes_max();
                    round.push((message, packet_id));
                }
                other => later.push(other),
            }
        }
        if !later.is_empty() {
            return (later, None);
        }
    }
    assert!(round.len() <= APPEND_ROUND_MAX, "a round stays within its bound");
    (Vec::new(), None)
}

/// The session's event for a control message (none: the shard let go of
/// the connection, as at shutdown).
fn control_event(control: Option<Control>) -> Event {
    match control {
        Some(Control::TakenOver) => Event::TakenOver,
        Some(Control::FellBehind) => Event::FellBehind,
        Some(Control::ShuttingDown) | None => Event::ShuttingDown,
    }
}

/// The session's answer to one item from the reader.
fn handle_inbound(session: &mut Session, inbound: Inbound) -> Vec<Action> {
    match inbound {
        Inbound::Packet(packet) => session.handle(Instant::now(), Event::Packet(packet)),
        Inbound::Refused(error) => session.refuse(Refusal::Decode(error)),
    }
}

/// Reads and decodes a connection's packets on the connection's own task,
/// one at a time as the session asks for them: the bytes read but not yet
/// handed over stay in `view` (at most one read's worth and a packet cut
/// short), and the socket is read only when no whole packet is left there,
/// so a client that sends faster than its session takes packets is held
/// back by TCP. Reading on the same task saves an inbound packet a hand-off
/// to another task (a wake-up each way).
struct PacketReader<R> {
    stream: R,
    /// Bytes read and not yet decoded (decoded packets hold slices of it).
    view: Bytes,
    /// Where a read's bytes are gathered, behind what `view` had left.
    buffer: BytesMut,
    /// What one read fills.
    chunk: Vec<u8>,
    /// The protocol level, once a CONNECT said it.
    version: Option<Version>,
    packet_bytes_max: usize,
    /// The stream ended, failed, or sent bytes that do not decode (handed
    /// over as a refusal): nothing more is read.
    ended: bool,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    fn new(stream: R, packet_bytes_max: usize) -> Self {
        PacketReader {
            stream,
            view: Bytes::new(),
            buffer: BytesMut::new(),
            chunk: vec![0u8; READ_CHUNK_BYTES],
            version: None,
            packet_bytes_max,
            ended: false,
        }
    }

    /// The next packet already read, without reading the socket (`None`:
    /// none is whole yet, or the stream ended).
    fn buffered(&mut self) -> Option<Inbound> {
        if self.view.is_empty() {
            return None;
        }
        match decode_packet(&self.view, self.version, self.packet_bytes_max) {
            Ok(Some((packet, used))) => {
                assert!(
                    used > 0 && used <= self.view.len(),
                    "the codec uses some of what it was given"
                );
                if let Packet::Connect(connect) = &packet {
                    self.version = self.version.or(Some(connect.version));
                }
                self.view = self.view.slice(used..);
                Some(Inbound::Packet(packet))
            }
            Ok(None) => {
                // Only a packet cut short is left: at most `packet_bytes_max`.
                assert!(
                    self.view.len() <= self.packet_bytes_max.max(5),
                    "the codec bounds a partial packet"
                );
                None
            }
            Err(error) => {
                self.ended = true;
                self.view = Bytes::new();
                Some(Inbound::Refused(error))
            }
        }
    }

    /// The next packet, reading the socket when none is whole (`None`: the
    /// stream ended or failed). Cancel-safe: a read that did not finish
    /// took nothing from the socket.
    async fn next(&mut self) -> Option<Inbound> {
        loop {
            if let Some(inbound) = self.buffered() {
                return Some(inbound);
            }
            if self.ended {
                return None;
            }
            match self.stream.read(&mut self.chunk).await {
                Ok(0) | Err(_) => {
                    self.ended = true;
                    self.view = Bytes::new();
                    return None;
                }
                Ok(read) => {
                    // A packet cut short goes in front of what follows it.
                    self.buffer.extend_from_slice(&self.view);
                    self.buffer
                        .extend_from_slice(self.chunk.get(..read).unwrap_or_default());
                    self.view = self.buffer.split().freeze();
                }
            }
        }
    }
}
