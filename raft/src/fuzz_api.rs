//! Entry points for the fuzz targets in `raft/fuzz` (cargo feature
//! `fuzzing`; not part of the crate's API, hidden from its docs).
//!
//! Each function runs the real decoder or open path on bytes the fuzzer
//! wrote, and answers with plain values (`Debug` text, byte buffers) so the
//! targets can check round trips without the crate's types leaving it:
//! - the metadata log: [`open_log`] opens `raft.log` (and `vote`) as a
//!   restart does, [`rewrite_log`] re-encodes what it read with the encoder
//!   a purge uses;
//! - the vote file: [`load_vote`], [`resave_vote`];
//! - the snapshot file: [`open_snapshot`], [`resave_snapshot`];
//! - the peer handshake: [`peer_hello`] reads the Hello a connection opens
//!   with;
//! - the peer RPC stream: [`read_rpc_stream`] reads frames as a connection
//!   does and decodes each as a request and as a response, re-encoding what
//!   decodes; [`sample_rpc_stream`] builds a stream of every RPC kind from a
//!   metadata directory, for seed corpora.
//!
//! Nothing here is used by the broker.

use std::{
    future::Future,
    path::Path,
    pin::pin,
    task::{Context, Poll, Waker},
};

use openraft::{storage::RaftLogStorage, RaftLogReader};

use crate::{
    command::Command,
    image::BrokerInfo,
    log_store::LogStore,
    network::{decode_request, decode_response, encode_request, encode_response, RpcRequest, RpcResponse},
    snapshot::{encode_image, SnapshotStore, StoredSnapshot},
    tcp::{encode_rpc_frame, read_rpc_frame},
    types::LogId,
    vote::VoteFile,
};

/// Runs a future that never waits (the stores here do their I/O
/// synchronously, and reading a byte slice is always ready).
///
/// # Panics
/// If the future is pending: that would be a change in the code under test
/// this harness must hear about.
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("a fuzzed store operation waited"),
    }
}

/// What opening a metadata log found, as openraft would see it at restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    /// Every live entry, printed.
    pub entries: Vec<String>,
    /// `get_log_state`: last purged and last log id, printed.
    pub log_state: String,
    /// `read_committed`, printed.
    pub committed: String,
    /// `read_vote`, printed.
    pub vote: String,
    /// Bytes cut from the end of the file as a torn tail.
    pub bytes_cut: u64,
    /// Bytes left in `raft.log` after opening.
    pub file_bytes: u64,
}

/// Opens the metadata log of `dir` (`raft.log`, `vote`) as a restart does.
pub fn open_log(dir: &Path) -> Result<LogState, String> {
    let (mut store, recovery) = LogStore::open(dir).map_err(|error| error.to_string())?;
    let entries = ready(store.try_get_log_entries(..)).map_err(|error| error.to_string())?;
    let log_state = ready(store.get_log_state()).map_err(|error| error.to_string())?;
    let committed = ready(store.read_committed()).map_err(|error| error.to_string())?;
    let vote = ready(store.read_vote()).map_err(|error| error.to_string())?;
    let file_bytes = std::fs::metadata(dir.join(crate::log_store::LOG_FILE_NAME))
        .map_err(|error| error.to_string())?
        .len();
    Ok(LogState {
        entries: entries.iter().map(|entry| format!("{entry:?}")).collect(),
        log_state: format!("{:?} {:?}", log_state.last_purged_log_id, log_state.last_log_id),
        committed: format!("{committed:?}"),
        vote: format!("{vote:?}"),
        bytes_cut: recovery.bytes_cut,
        file_bytes,
    })
}

/// Opens the log of `dir` and rewrites its file from what was read (magic,
/// purge marker, commit marker, entries: what a purge writes).
pub fn rewrite_log(dir: &Path) -> Result<(), String> {
    let (store, _) = LogStore::open(dir).map_err(|error| error.to_string())?;
    store.rewrite_for_fuzzing().map_err(|error| error.to_string())
}

/// The vote saved in `dir`, printed; `None` if there is no vote file.
pub fn load_vote(dir: &Path) -> Result<Option<String>, String> {
    let vote = VoteFile::new(dir).load().map_err(|error| error.to_string())?;
    Ok(vote.map(|vote| format!("{vote:?}")))
}

/// Loads the vote of `from` and saves it into `to` with the vote encoder.
pub fn resave_vote(from: &Path, to: &Path) -> Result<(), String> {
    match VoteFile::new(from).load().map_err(|error| error.to_string())? {
        Some(vote) => VoteFile::new(to).save(&vote).map_err(|error| error.to_string()),
        None => Ok(()),
    }
}

/// The snapshot of `dir` (meta and decoded image), printed; `None` if there
/// is no snapshot file.
pub fn open_snapshot(dir: &Path) -> Result<Option<String>, String> {
    let (_, loaded) = SnapshotStore::open(dir).map_err(|error| error.to_string())?;
    Ok(loaded.map(|(meta, image)| format!("{meta:?} {image:?}")))
}

/// Opens the snapshot of `from` and saves it into `to`, the image encoded
/// again from its decoded form.
pub fn resave_snapshot(from: &Path, to: &Path) -> Result<(), String> {
    let (_, loaded) = SnapshotStore::open(from).map_err(|error| error.to_string())?;
    let Some((meta, image)) = loaded else {
        return Ok(());
    };
    let (store, _) = SnapshotStore::open(to).map_err(|error| error.to_string())?;
    let snapshot = StoredSnapshot {
        meta,
        image_bytes: encode_image(&image),
    };
    store.save(snapshot).map(|_| ()).map_err(|error| error.to_string())
}

/// One frame of a peer RPC stream, decoded both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcFrame {
    /// The payload as a request: sender and request printed, and the
    /// request encoded again; `Err` if it does not decode.
    pub request: Result<(String, Vec<u8>), String>,
    /// The payload as a response: printed, and encoded again.
    pub response: Result<(String, Vec<u8>), String>,
}

/// Decodes `payload` as an `RpcRequest` and as an `RpcResponse`.
pub fn decode_rpc_payload(payload: &[u8]) -> RpcFrame {
    let request = decode_request(payload)
        .map(|(from, request)| (format!("{from} {request:?}"), encode_request(from, &request)))
        .map_err(|error| error.to_string());
    let response = decode_response(payload)
        .map(|response| (format!("{response:?}"), encode_response(&response)))
        .map_err(|error| error.to_string());
    RpcFrame { request, response }
}

/// What reading a byte stream from a peer came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcStream {
    /// Every whole frame with a good checksum, decoded.
    pub frames: Vec<RpcFrame>,
    /// Why reading stopped before a clean end between frames, if it did
    /// (the server then closes the connection).
    pub error: Option<String>,
}

/// Reads `bytes` as the server reads a connection: frame after frame until
/// the stream ends or a frame is bad; decodes each payload.
pub fn read_rpc_stream(mut bytes: &[u8]) -> RpcStream {
    let mut frames = Vec::new();
    loop {
        match ready(read_rpc_frame(&mut bytes)) {
            Ok(Some(payload)) => frames.push(decode_rpc_payload(&payload)),
            Ok(None) => return RpcStream { frames, error: None },
            Err(error) => {
                return RpcStream {
                    frames,
                    error: Some(error.to_string()),
                }
            }
        }
    }
}

/// Reads `bytes` as a raft listener reads the Hello that opens a peer
/// connection: the node id it claims, or why it is refused.
pub fn peer_hello(bytes: &[u8]) -> Result<u64, String> {
    crate::peer_auth::decode_hello(bytes)
}

/// Frames one payload as the transport sends it.
pub fn rpc_frame(payload: &[u8]) -> Result<Vec<u8>, String> {
    encode_rpc_frame(payload).map_err(|error| error.to_string())
}

/// A stream of request and response frames of every RPC kind, built from
/// the metadata directory `dir` (its log entries, vote and snapshot), for
/// seed corpora.
pub fn sample_rpc_stream(dir: &Path) -> Result<Vec<u8>, String> {
    let (mut store, _) = LogStore::open(dir).map_err(|error| error.to_string())?;
    let entries = ready(store.try_get_log_entries(..)).map_err(|error| error.to_string())?;
    let vote = ready(store.read_vote())
        .map_err(|error| error.to_string())?
        .unwrap_or_default();
    let last_log_id: Option<LogId> = entries.last().map(|entry| entry.log_id);
    let mut payloads = vec![
        encode_request(
            1,
            &RpcRequest::AppendEntries(openraft::raft::AppendEntriesRequest {
                vote,
                prev_log_id: entries.first().map(|entry| entry.log_id),
                entries: entries.clone(),
                leader_commit: last_log_id,
            }),
        ),
        encode_request(1, &RpcRequest::Vote(openraft::raft::VoteRequest { vote, last_log_id })),
        encode_request(1, &RpcRequest::BrokerHeartbeat { node_id: 2 }),
        encode_request(
            2,
            &RpcRequest::Forward(Command::RegisterBroker(BrokerInfo {
                node_id: 3,
                host: "127.0.0.1".into(),
                port: 9094,
                shards: 2,
                fenced: false,
                shard_ports: vec![9094, 9095],
                listeners: Vec::new(),
            })),
        ),
        encode_response(&RpcResponse::BrokerHeartbeat { is_leader: true }),
        encode_response(&RpcResponse::Error("not the leader".into())),
        encode_response(&RpcResponse::Vote(openraft::raft::VoteResponse {
            vote,
            vote_granted: true,
            last_log_id,
        })),
        encode_response(&RpcResponse::AppendEntries(
            openraft::raft::AppendEntriesResponse::Success,
        )),
    ];
    let (snapshots, _) = SnapshotStore::open(dir).map_err(|error| error.to_string())?;
    if let Some(snapshot) = snapshots.current() {
        payloads.push(encode_request(
            1,
            &RpcRequest::InstallSnapshot(openraft::raft::InstallSnapshotRequest {
                vote,
                meta: snapshot.meta.clone(),
                offset: 0,
                data: snapshot.snapshot.into_inner(),
                done: true,
            }),
        ));
    }
    let mut stream = Vec::new();
    for payload in payloads {
        stream.extend_from_slice(&rpc_frame(&payload)?);
    }
    Ok(stream)
}
