//! One MQTT connection's task, on the shard that accepted it: reads and
//! decodes packets (a reader task of its own), feeds them, the deliveries
//! of the shard's feed, control messages and ticks to its
//! [`Session`], and carries out the actions the session returns — writes,
//! the client-id claim on the id's home shard, appends on the partition's
//! owner, subscription changes in the shard's table.
//!
//! The socket is read and written through two descriptors of the same
//! socket (a `dup`), one per task, so neither half needs a lock.

use std::{
    cell::Cell,
    collections::VecDeque,
    os::fd::{AsRawFd, FromRawFd, IntoRawFd},
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::{
    channels::local_channel::{self, LocalReceiver, LocalSender},
    net::TcpStream,
};
use shardline_net::mqtt::{decode_packet, encode_packet, MqttDecodeError, Packet, QoS, Version};

use super::{
    home_shard, mapping,
    reason::Refusal,
    session::{Action, Event, Session, SessionLimits},
    Control, Delivery, Holder, CONTROL_QUEUE_MAX, DELIVERY_QUEUE_MAX,
};
use crate::{error::EngineError, shard::Shard};

/// Decoded packets the reader task queues ahead of the session; the reader
/// stops reading while the queue is full (backpressure on the client).
const INBOUND_QUEUE_MAX: usize = 16;

/// Bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 16 << 10;

/// Longest an append (QoS 0 or 1) waits for the in-sync replicas.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the reader task hands the session.
#[expect(
    clippy::large_enum_variant,
    reason = "one packet at a time per connection; boxing would allocate for every packet"
)]
enum Inbound {
    Packet(Packet),
    Refused(MqttDecodeError),
}

/// Serves `stream` as a task of its own, or closes it at once when the
/// shard already serves its share of MQTT connections.
pub(crate) fn start(shard: &Rc<Shard>, stream: TcpStream) {
    let (deliveries, delivered) = local_channel::new_bounded(DELIVERY_QUEUE_MAX);
    let (control, controlled) = local_channel::new_bounded(CONTROL_QUEUE_MAX);
    let peer = stream.peer_addr().ok();
    let Some(id) = shard.mqtt.open(deliveries, control) else {
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
            out: Vec::new(),
        };
        let result = connection.serve(stream, delivered, controlled).await;
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
    /// Encoded packets not written yet.
    out: Vec<u8>,
}

impl Connection {
    /// Runs the connection; returns why the server closed it (`None`: the
    /// client's DISCONNECT), or the I/O error that ended it.
    async fn serve(
        &mut self,
        stream: TcpStream,
        delivered: LocalReceiver<Delivery>,
        controlled: LocalReceiver<Control>,
    ) -> std::io::Result<Option<String>> {
        // SAFETY: the descriptor is `stream`'s, open for as long as `stream`
        // lives, and only borrowed here to duplicate it.
        let reading = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned()?;
        // SAFETY: `reading` is an open descriptor of the same connected TCP
        // socket, owned from here on by the reader's stream.
        let reading = unsafe { TcpStream::from_raw_fd(reading.into_raw_fd()) };
        let mut writer = stream;
        let (inbound, received) = local_channel::new_bounded(INBOUND_QUEUE_MAX);
        let packet_bytes_max = self.shard.config.mqtt_max_packet_bytes;
        let reader = glommio::spawn_local(read_packets(reading, inbound, packet_bytes_max)).detach();
        let limits = SessionLimits {
            packet_bytes_max: u32::try_from(packet_bytes_max).unwrap_or(u32::MAX),
            assigned_client_id: format!(
                "shardline-{}-{}-{}",
                self.shard.node_id(),
                self.me.shard,
                self.me.connection
            ),
        };
        let mut session = Session::new(Instant::now(), limits);
        let mut pending: VecDeque<Action> = VecDeque::new();
        let result = loop {
            let mut closing = None;
            while let Some(action) = pending.pop_front() {
                match action {
                    Action::Send(packet) => {
                        encode_packet(&packet, session.version().unwrap_or(Version::V311), &mut self.out);
                    }
                    Action::Claim { client_id } => self.claim(client_id).await,
                    Action::Append {
                        topic,
                        payload,
                        qos,
                        retain,
                        packet_id,
                    } => {
                        let outcome = append(&self.shard, &topic, &payload, qos, retain).await;
                        if let Err(error) = &outcome {
                            tracing::debug!(%topic, %error, "MQTT publish not appended");
                        }
                        pending.extend(session.handle(
                            Instant::now(),
                            Event::Appended {
                                packet_id,
                                qos,
                                outcome,
                            },
                        ));
                    }
                    Action::Subscribe { filters } => {
                        self.shard.mqtt.subscribe(self.me.connection, filters.clone());
                        if let Err(error) = super::feed::ensure_running(&self.shard).await {
                            tracing::warn!(%error, "MQTT feed did not start");
                        }
                        // Queued now, written after the SUBACK that follows.
                        self.queue_retained(filters).await;
                    }
                    Action::Unsubscribe { filters } => self.shard.mqtt.unsubscribe(self.me.connection, &filters),
                    Action::Close { why } => closing = Some(why),
                }
            }
            if !self.out.is_empty() {
                if let Err(error) = writer.write_all(&self.out).await {
                    break Err(error);
                }
                self.out.clear();
            }
            if let Some(why) = closing {
                break Ok(why);
            }
            assert!(!session.is_closed(), "a closed session ends with a Close action");
            let takes = session.takes_deliveries();
            let deadline = session.deadline();
            let event = future::or(
                async {
                    match received.recv().await {
                        Some(Inbound::Packet(packet)) => Some(Ok(Event::Packet(packet))),
                        Some(Inbound::Refused(error)) => Some(Err(Refusal::Decode(error))),
                        None => None,
                    }
                },
                future::or(
                    async {
                        Some(Ok(match controlled.recv().await {
                            Some(Control::TakenOver) => Event::TakenOver,
                            Some(Control::FellBehind) => Event::FellBehind,
                            Some(Control::ShuttingDown) | None => Event::ShuttingDown,
                        }))
                    },
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
                            let Some(deadline) = deadline else {
                                return future::pending().await;
                            };
                            glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                            Some(Ok(Event::Tick))
                        },
                    ),
                ),
            )
            .await;
            let now = Instant::now();
            match event {
                Some(Ok(event)) => pending.extend(session.handle(now, event)),
                Some(Err(refusal)) => pending.extend(session.refuse(refusal)),
                // The client went away (or broke the stream): no will yet.
                None => break Err(std::io::Error::from(std::io::ErrorKind::ConnectionAborted)),
            }
        };
        reader.cancel();
        let _ = writer.close().await;
        if let Some(will) = session.take_will() {
            let qos = will.qos.min(QoS::AtLeastOnce);
            match append(&self.shard, &will.topic, &will.payload, qos, will.retain).await {
                Ok(()) => tracing::debug!(topic = %will.topic, "MQTT will published"),
                Err(error) => tracing::warn!(topic = %will.topic, %error, "MQTT will not published"),
            }
        }
        result
    }

    /// Asks every shard for its retained messages matching `filters` and
    /// queues them for this connection.
    async fn queue_retained(&self, filters: Vec<(String, QoS)>) {
        let shard = &self.shard;
        let asks = (0..shard.shard_count).map(|owner| {
            let filters = filters.clone();
            shard.invoke_on(
                owner,
                move |s: Rc<Shard>| async move { s.mqtt.retained_matching(&filters) },
            )
        });
        for answer in futures_util::future::join_all(asks).await {
            for (topic, payload, qos) in answer.unwrap_or_default() {
                let delivery = Delivery {
                    topic: Rc::from(topic),
                    payload,
                    qos,
                    retain: true,
                };
                shard.mqtt.deliver_to(self.me.connection, delivery);
            }
        }
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
                        s.mqtt.take_over(previous.connection);
                    })
                    .await;
            }
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

/// Appends one MQTT message to its partition, on the partition's owner,
/// and waits until it is durable as an acks=all produce would; a retained
/// one then becomes its topic's retained message on that owner.
async fn append(shard: &Rc<Shard>, topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Result<(), EngineError> {
    let partitions = mapping::ensure_topic(shard).await?;
    let index = mapping::partition_of(topic, partitions);
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
    let batch = mapping::batch_of(topic, payload, qos, retain, timestamp_ms);
    let retained = retain.then(|| (topic.to_string(), Bytes::copy_from_slice(payload)));
    let name = shard.config.mqtt_kafka_topic.clone();
    let owner = shard.owner_of(&name, index)?;
    let epoch = crate::kafka::epoch_of(shard);
    shard
        .invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            let partition = s.partition(&name, index)?;
            let bytes = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            partition.produce(batch, -1, APPEND_TIMEOUT).await?;
            s.probe.count_produced(1, bytes);
            if let Some((topic, payload)) = retained {
                if !s.mqtt.keep_retained(topic, payload, qos) {
                    tracing::warn!("retained message not kept: the shard keeps its maximum of retained topics");
                }
            }
            Ok(())
        })
        .await?
}

/// Reads the socket, decodes packets and queues them for the session,
/// until the socket ends or a packet does not decode (which it queues as a
/// refusal, then stops).
async fn read_packets(mut stream: TcpStream, inbound: LocalSender<Inbound>, packet_bytes_max: usize) {
    let version: Cell<Option<Version>> = Cell::new(None);
    let mut buffer = BytesMut::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        buffer.extend_from_slice(chunk.get(..read).unwrap_or_default());
        let mut view: Bytes = buffer.split().freeze();
        loop {
            match decode_packet(&view, version.get(), packet_bytes_max) {
                Ok(Some((packet, used))) => {
                    if let Packet::Connect(connect) = &packet {
                        version.set(version.get().or(Some(connect.version)));
                    }
                    view = view.slice(used..);
                    if inbound.send(Inbound::Packet(packet)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = inbound.send(Inbound::Refused(error)).await;
                    return;
                }
            }
        }
        // Only a packet cut short is left: at most `packet_bytes_max`.
        assert!(
            view.len() <= packet_bytes_max.max(5),
            "the codec bounds a partial packet"
        );
        buffer.extend_from_slice(&view);
    }
}
