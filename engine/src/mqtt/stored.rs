//! The stored form of a persistent MQTT session: the value of its record
//! in `__mqtt_sessions` (key: the client id; `sessions.rs`).
//!
//! ```text
//!  0       1        2              6
//!  +-------+--------+--------------+------------------------------------------+
//!  | 0xB5  | format | crc32c(body) | body                                     |
//!  | magic | 1 or 2 | u32 BE       |                                          |
//!  +-------+--------+--------------+------------------------------------------+
//!  body (integers big-endian; strings: u16 length, then UTF-8 bytes):
//!    u8      protocol level (4: 3.1.1, 5: 5.0)
//!    u32     session expiry interval, seconds (u32::MAX: never)
//!    i64     saved at, ms since the Unix epoch
//!    u64     claim number       } format 2 only (format 1 reads as claim 0
//!    i32     claim node id      } of node -1): which connection saved it
//!    string  the Kafka topic the cursors are offsets of
//!    u16     subscriptions, then each: string filter, u8 QoS (0..=2),
//!                u8 flags (bit 0: retain as published, bit 1: no local),
//!                u32 subscription identifier (0: none)
//!    u32     cursors, then each: i32 partition, i64 next offset not yet handed over
//!    u16     deliveries in flight, then each: u16 packet id (≥ 1),
//!                u8 awaiting (1: PUBACK, 2: PUBREC, 3: PUBCOMP),
//!                i32 partition (-1: not from the log), i64 offset
//!    u16     QoS 2 identifiers received and awaiting PUBREL, then each u16 (≥ 1)
//! ```
//!
//! A record that does not decode (wrong magic, format or checksum, a count
//! over its bound, bytes missing or left over) is refused with the reason:
//! the session it held is treated as absent, never guessed at.
//!
//! A removal (a tombstone: null value) made by a connection taking the
//! session up with a clean start, or finding none stored in a cluster,
//! carries that connection's claim in the header [`CLAIM_HEADER`] (the
//! record batch's CRC covers it):
//!
//! ```text
//!  0                8            12
//!  +----------------+------------+
//!  | claim number   | node id    |
//!  | u64 BE         | i32 BE     |
//!  +----------------+------------+
//! ```

use std::collections::BTreeMap;

use shardline_log::Offset;
use shardline_net::mqtt::{PacketId, QoS, Version};

use super::{
    session::{Awaiting, INFLIGHT_OUT_MAX, RELEASES_PENDING_MAX, SUBSCRIPTIONS_MAX},
    Position, Subscription,
};

/// The first byte of every stored session.
const MAGIC: u8 = 0xB5;

/// The format written here.
const FORMAT: u8 = 2;

/// The format before claims, still read.
const FORMAT_WITHOUT_CLAIM: u8 = 1;

/// Which connection holds a session, across the nodes of a cluster: each
/// connection that takes the session up numbers its claim one past the
/// claim it found stored, and at least its node's clock in milliseconds
/// (ties broken by node id), so that of two connections that found nothing
/// stored, the later one (clocks in step) holds the newer claim. A save
/// whose claim is older than the stored one is refused (`sessions.rs`): its
/// connection was taken over through another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Claim {
    /// One past the claim number found stored when the session was taken
    /// up, or the claiming node's clock (ms since the Unix epoch) if later.
    pub(crate) number: u64,
    /// The node of the connection that made the claim.
    pub(crate) node_id: i32,
}

impl Claim {
    /// The claim of a connection on node `node_id` taking up, at `now_ms`,
    /// a session whose stored claim is `stored` (`None`: none stored).
    pub(crate) fn after(stored: Option<Claim>, node_id: i32, now_ms: i64) -> Claim {
        let next = stored.map_or(0, |claim| claim.number).saturating_add(1);
        let number = next.max(u64::try_from(now_ms).unwrap_or(0));
        let claim = Claim { number, node_id };
        assert!(claim.number >= next, "a claim is past the one stored");
        assert!(
            stored.is_none_or(|stored| claim > stored),
            "a new claim supersedes the stored one"
        );
        claim
    }
}

/// The header of a removal that names the claim of the connection that
/// made it.
pub(crate) const CLAIM_HEADER: &str = "mqtt.claim";

/// Bytes of a [`CLAIM_HEADER`] value.
const CLAIM_HEADER_BYTES: usize = 12;

impl Claim {
    /// The claim as a [`CLAIM_HEADER`] value.
    pub(crate) fn to_header(self) -> [u8; CLAIM_HEADER_BYTES] {
        let mut out = [0u8; CLAIM_HEADER_BYTES];
        let (number, node_id) = out.split_at_mut(8);
        number.copy_from_slice(&self.number.to_be_bytes());
        node_id.copy_from_slice(&self.node_id.to_be_bytes());
        out
    }

    /// The claim a [`CLAIM_HEADER`] value holds (`None`: not 12 bytes).
    pub(crate) fn from_header(value: &[u8]) -> Option<Claim> {
        let value: &[u8; CLAIM_HEADER_BYTES] = value.try_into().ok()?;
        let (number, node_id) = value.split_at(8);
        Some(Claim {
            number: u64::from_be_bytes(number.try_into().ok()?),
            node_id: i32::from_be_bytes(node_id.try_into().ok()?),
        })
    }
}

/// Bytes before the body: magic, format, checksum.
const HEADER_BYTES: usize = 6;

/// Cursors one stored session holds at most (one per partition of the
/// mapped topic).
pub(crate) const CURSORS_MAX: usize = 100_000;

/// A persistent session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredSession {
    /// The protocol level it was made with.
    pub(crate) version: Version,
    /// Seconds it outlives its connection (`u32::MAX`: forever).
    pub(crate) expiry_s: u32,
    /// When it was saved (its connection's end, or the last save before a
    /// crash), ms since the Unix epoch.
    pub(crate) saved_at_ms: i64,
    /// The connection that saved it.
    pub(crate) claim: Claim,
    /// The Kafka topic `cursors` are offsets of.
    pub(crate) kafka_topic: String,
    /// Its subscriptions.
    pub(crate) subscriptions: Vec<Subscription>,
    /// Per partition of `kafka_topic`: every matching message before this
    /// offset was handed to the client.
    pub(crate) cursors: BTreeMap<i32, Offset>,
    /// QoS 1 and 2 deliveries not yet complete.
    pub(crate) inflight: Vec<StoredInflight>,
    /// QoS 2 publications received, stored and awaiting their PUBREL.
    pub(crate) releases_pending: Vec<PacketId>,
}

/// A delivery in flight, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredInflight {
    pub(crate) packet_id: PacketId,
    pub(crate) awaiting: Awaiting,
    /// Where the message is in the log (`None`: a retained or shared
    /// delivery, which is not sent again).
    pub(crate) position: Option<Position>,
}

/// Why stored bytes are not a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadSession(pub(crate) &'static str);

impl std::fmt::Display for BadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stored MQTT session refused: {}", self.0)
    }
}

impl StoredSession {
    /// The stored bytes of this session.
    pub(crate) fn encode(&self) -> Vec<u8> {
        assert!(self.subscriptions.len() <= SUBSCRIPTIONS_MAX, "subscriptions bounded");
        assert!(self.inflight.len() <= INFLIGHT_OUT_MAX, "deliveries in flight bounded");
        let mut body = Vec::new();
        body.push(self.version.level());
        body.extend_from_slice(&self.expiry_s.to_be_bytes());
        body.extend_from_slice(&self.saved_at_ms.to_be_bytes());
        body.extend_from_slice(&self.claim.number.to_be_bytes());
        body.extend_from_slice(&self.claim.node_id.to_be_bytes());
        string(&mut body, &self.kafka_topic);
        body.extend_from_slice(&count16(self.subscriptions.len()).to_be_bytes());
        for subscription in &self.subscriptions {
            string(&mut body, &subscription.filter);
            body.push(qos_bits(subscription.qos));
            body.push(u8::from(subscription.retain_as_published) | (u8::from(subscription.no_local) << 1));
            body.extend_from_slice(&subscription.id.unwrap_or(0).to_be_bytes());
        }
        let cursors = u32::try_from(self.cursors.len().min(CURSORS_MAX)).unwrap_or(0);
        body.extend_from_slice(&cursors.to_be_bytes());
        for (partition, offset) in self.cursors.iter().take(CURSORS_MAX) {
            body.extend_from_slice(&partition.to_be_bytes());
            body.extend_from_slice(&offset.0.to_be_bytes());
        }
        body.extend_from_slice(&count16(self.inflight.len()).to_be_bytes());
        for inflight in &self.inflight {
            body.extend_from_slice(&inflight.packet_id.get().to_be_bytes());
            body.push(match inflight.awaiting {
                Awaiting::Acknowledgement => 1,
                Awaiting::Receipt => 2,
                Awaiting::Completion => 3,
            });
            let (partition, offset) = inflight.position.map_or((-1, -1), |p| (p.partition, p.offset.0));
            body.extend_from_slice(&partition.to_be_bytes());
            body.extend_from_slice(&offset.to_be_bytes());
        }
        body.extend_from_slice(&count16(self.releases_pending.len()).to_be_bytes());
        for id in &self.releases_pending {
            body.extend_from_slice(&id.get().to_be_bytes());
        }
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.push(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The session stored in `bytes`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<StoredSession, BadSession> {
        let mut reader = Reader(bytes);
        if reader.u8()? != MAGIC {
            return Err(BadSession("magic"));
        }
        let format = reader.u8()?;
        if format != FORMAT && format != FORMAT_WITHOUT_CLAIM {
            return Err(BadSession("unknown format"));
        }
        let checksum = reader.u32()?;
        if crc32c::crc32c(reader.0) != checksum {
            return Err(BadSession("checksum"));
        }
        let version = Version::from_level(reader.u8()?).ok_or(BadSession("protocol level"))?;
        let expiry_s = reader.u32()?;
        let saved_at_ms = reader.i64()?;
        let claim = match format {
            FORMAT_WITHOUT_CLAIM => Claim { number: 0, node_id: -1 },
            _ => Claim {
                number: reader.u64()?,
                node_id: reader.i32()?,
            },
        };
        let kafka_topic = reader.string()?;
        let count = usize::from(reader.u16()?);
        if count > SUBSCRIPTIONS_MAX {
            return Err(BadSession("too many subscriptions"));
        }
        let mut subscriptions = Vec::with_capacity(count);
        for _ in 0..count {
            let filter = reader.string()?;
            let qos = QoS::from_bits(reader.u8()?).map_err(|_| BadSession("QoS"))?;
            let flags = reader.u8()?;
            if flags > 3 {
                return Err(BadSession("subscription flags"));
            }
            let id = reader.u32()?;
            subscriptions.push(Subscription {
                filter,
                qos,
                retain_as_published: flags & 1 == 1,
                no_local: flags & 2 == 2,
                id: (id > 0).then_some(id),
            });
        }
        let count = usize::try_from(reader.u32()?).unwrap_or(usize::MAX);
        if count > CURSORS_MAX {
            return Err(BadSession("too many cursors"));
        }
        let mut cursors = BTreeMap::new();
        for _ in 0..count {
            let partition = reader.i32()?;
            let offset = reader.i64()?;
            if partition < 0 || offset < 0 || cursors.insert(partition, Offset(offset)).is_some() {
                return Err(BadSession("cursor"));
            }
        }
        let count = usize::from(reader.u16()?);
        if count > INFLIGHT_OUT_MAX {
            return Err(BadSession("too many deliveries in flight"));
        }
        let mut inflight: Vec<StoredInflight> = Vec::with_capacity(count);
        for _ in 0..count {
            let packet_id = reader.packet_id()?;
            let awaiting = match reader.u8()? {
                1 => Awaiting::Acknowledgement,
                2 => Awaiting::Receipt,
                3 => Awaiting::Completion,
                _ => return Err(BadSession("awaiting")),
            };
            let (partition, offset) = (reader.i32()?, reader.i64()?);
            let position = match (partition, offset) {
                (-1, -1) => None,
                (partition, offset) if partition >= 0 && offset >= 0 => Some(Position {
                    partition,
                    offset: Offset(offset),
                }),
                _ => return Err(BadSession("delivery position")),
            };
            if inflight.iter().any(|i| i.packet_id == packet_id) {
                return Err(BadSession("packet id in flight twice"));
            }
            inflight.push(StoredInflight {
                packet_id,
                awaiting,
                position,
            });
        }
        let count = usize::from(reader.u16()?);
        if count > RELEASES_PENDING_MAX {
            return Err(BadSession("too many QoS 2 identifiers"));
        }
        let mut releases_pending = Vec::with_capacity(count);
        for _ in 0..count {
            releases_pending.push(reader.packet_id()?);
        }
        if !reader.0.is_empty() {
            return Err(BadSession("bytes after the session"));
        }
        Ok(StoredSession {
            version,
            expiry_s,
            saved_at_ms,
            claim,
            kafka_topic,
            subscriptions,
            cursors,
            inflight,
            releases_pending,
        })
    }

    /// Whether, saved when it was, the session has expired at `now_ms`.
    pub(crate) fn expired_at(&self, now_ms: i64) -> bool {
        if self.expiry_s == u32::MAX {
            return false;
        }
        now_ms.saturating_sub(self.saved_at_ms) > i64::from(self.expiry_s).saturating_mul(1000)
    }
}

/// A count the session bounds below 2^16.
pub(super) fn count16(count: usize) -> u16 {
    u16::try_from(count).unwrap_or(u16::MAX)
}

/// Writes `value` as a u16 length and its bytes (cut to 65,535 bytes:
/// what an MQTT string holds at most).
pub(super) fn string(out: &mut Vec<u8>, value: &str) {
    let bytes = value
        .as_bytes()
        .get(..usize::from(u16::MAX))
        .unwrap_or(value.as_bytes());
    out.extend_from_slice(&count16(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

pub(super) fn qos_bits(qos: QoS) -> u8 {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// Why stored bytes do not read: what was wrong with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) &'static str);

impl From<Malformed> for BadSession {
    fn from(malformed: Malformed) -> BadSession {
        BadSession(malformed.0)
    }
}

/// Reads stored bytes, refusing what runs past their end.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(Malformed("cut short"))?;
        self.0 = rest;
        Ok(*head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, Malformed> {
        let [byte] = self.take::<1>()?;
        Ok(byte)
    }

    pub(super) fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    pub(super) fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    pub(super) fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(i64::from_be_bytes(self.take()?))
    }

    fn packet_id(&mut self) -> Result<PacketId, Malformed> {
        PacketId::new(self.u16()?).ok_or(Malformed("packet id 0"))
    }

    /// The next `length` bytes.
    pub(super) fn bytes(&mut self, length: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < length {
            return Err(Malformed("cut short"));
        }
        let (bytes, rest) = self.0.split_at(length);
        self.0 = rest;
        Ok(bytes)
    }

    /// A u16 length and that many bytes of UTF-8.
    pub(super) fn string(&mut self) -> Result<String, Malformed> {
        let length = usize::from(self.u16()?);
        let bytes = self.bytes(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Malformed("UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_claim_header_round_trips_and_other_lengths_are_refused() {
        let claim = Claim {
            number: u64::MAX - 3,
            node_id: -1,
        };
        assert_eq!(Claim::from_header(&claim.to_header()), Some(claim));
        assert_eq!(Claim::from_header(&[0; 11]), None);
        assert_eq!(Claim::from_header(&[0; 13]), None);
        assert_eq!(Claim::from_header(&[]), None);
    }

    fn session() -> StoredSession {
        StoredSession {
            version: Version::V5,
            expiry_s: 3600,
            saved_at_ms: 1_700_000_000_000,
            claim: Claim { number: 4, node_id: 2 },
            kafka_topic: "mqtt".to_string(),
            subscriptions: vec![
                Subscription {
                    filter: "a/+".to_string(),
                    qos: QoS::AtLeastOnce,
                    retain_as_published: false,
                    no_local: true,
                    id: Some(7),
                },
                Subscription {
                    filter: "$share/g/b/#".to_string(),
                    qos: QoS::ExactlyOnce,
                    retain_as_published: true,
                    no_local: false,
                    id: None,
                },
            ],
            cursors: [(0, Offset(17)), (3, Offset(0))].into_iter().collect(),
            inflight: vec![
                StoredInflight {
                    packet_id: PacketId::new(7).unwrap(),
                    awaiting: Awaiting::Completion,
                    position: Some(Position {
                        partition: 0,
                        offset: Offset(16),
                    }),
                },
                StoredInflight {
                    packet_id: PacketId::new(9).unwrap(),
                    awaiting: Awaiting::Acknowledgement,
                    position: None,
                },
            ],
            releases_pending: vec![PacketId::new(3).unwrap()],
        }
    }

    #[test]
    fn a_session_survives_its_bytes() {
        let stored = session();
        assert_eq!(StoredSession::decode(&stored.encode()), Ok(stored));
    }

    #[test]
    fn a_session_stored_before_claims_reads_as_claim_zero() {
        let stored = session();
        let bytes = stored.encode();
        // The same session in format 1: no claim after `saved at`.
        let claim_at = HEADER_BYTES + 1 + 4 + 8;
        let mut body = bytes[HEADER_BYTES..claim_at].to_vec();
        body.extend_from_slice(&bytes[claim_at + 12..]);
        let mut old = vec![MAGIC, FORMAT_WITHOUT_CLAIM];
        old.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        old.extend_from_slice(&body);
        let read = StoredSession::decode(&old).unwrap();
        assert_eq!(read.claim, Claim { number: 0, node_id: -1 });
        assert_eq!(
            StoredSession {
                claim: stored.claim,
                ..read
            },
            stored
        );
        // Any claim taken up from it supersedes it.
        assert!(Claim::after(Some(Claim { number: 0, node_id: -1 }), 1, 0) > Claim { number: 0, node_id: -1 });
        // Past the stored claim, and past the clock.
        let stored = Claim {
            number: 1_700_000_000_000,
            node_id: 3,
        };
        assert_eq!(Claim::after(Some(stored), 1, 5).number, 1_700_000_000_001);
        assert_eq!(
            Claim::after(Some(stored), 1, 1_800_000_000_000).number,
            1_800_000_000_000
        );
        assert!(Claim::after(None, 1, 1_800_000_000_001) > Claim::after(None, 2, 1_800_000_000_000));
        assert!(Claim { number: 5, node_id: 1 } > Claim { number: 4, node_id: 3 });
        assert!(Claim { number: 5, node_id: 3 } > Claim { number: 5, node_id: 1 });
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let bytes = session().encode();
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x20;
            assert!(StoredSession::decode(&flipped).is_err(), "a flip at {at} is caught");
            assert!(StoredSession::decode(&bytes[..at]).is_err(), "a cut at {at} is caught");
        }
    }

    #[test]
    fn expiry_counts_from_the_save() {
        let mut stored = session();
        assert!(!stored.expired_at(stored.saved_at_ms + 3_600_000));
        assert!(stored.expired_at(stored.saved_at_ms + 3_600_001));
        stored.expiry_s = u32::MAX;
        assert!(!stored.expired_at(i64::MAX));
    }

    proptest! {
        #[test]
        fn garbage_is_refused_or_decodes_to_what_it_reencodes_to(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(stored) = StoredSession::decode(&bytes) {
                prop_assert_eq!(StoredSession::decode(&stored.encode()), Ok(stored));
            }
        }

        #[test]
        fn garbage_behind_a_valid_header_is_refused_without_a_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![MAGIC, FORMAT];
            bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            bytes.extend_from_slice(&body);
            if let Ok(stored) = StoredSession::decode(&bytes) {
                prop_assert_eq!(StoredSession::decode(&stored.encode()), Ok(stored));
            }
        }
    }
}
