//! The per-connection loop: read frames, run handlers concurrently, write
//! responses in request order.
//!
//! ```text
//!            socket ──► reader ──► decode ──► spawn handler task ──┐
//!                        ▲                                         │ push (FIFO)
//!                        │ waits while in_flight_max requests      ▼
//!                        │ are decoded but unanswered         ┌──────────┐
//!                        └──────────── release ◄──────────────│ pipeline │
//!                                                             └────┬─────┘
//!            socket ◄── coalescing write ◄── encode ◄── writer ◄───┘ pop front, await its task
//! ```
//!
//! Both halves run inside the one future `serve_connection` returns, so all
//! connection state lives on the shard that accepted the socket and nothing
//! is `Send`. Handlers run as glommio tasks of their own: a slow handler
//! (a Fetch waiting for data, a Produce waiting for fsync) does not stop
//! later requests from being read and handled; the writer still answers in
//! request order, as Kafka requires. A handler, once started, runs to the
//! end even if the connection dies; its response is then dropped.
//!
//! Writes: a response is a list of pieces (`frame.rs`). Pieces shorter than
//! [`PASS_THROUGH_BYTES_MIN`] (128 KiB) are copied into a staging buffer,
//! larger ones (Fetch record slices) are written straight from where they
//! are. Responses
//! whose handlers have already finished are gathered into the same write.
//! docs/kafka-wire.md has the measurements behind the numbers.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::task::JoinHandle;

use crate::apis;
use crate::capture;
use crate::codec::{self, Decoded, Request, ResponseBody, ResponseTo};
use crate::error::NetError;
use crate::frame::{FrameReader, ResponseFrame};
use crate::limits::{ConnectionActivity, ConnectionShare, RequestMemory};
use crate::tls::Transport;

/// Pieces at least this long are written from where they are instead of
/// being copied into the staging buffer. Measured on loopback (see
/// docs/kafka-wire.md): sending a 16 KiB piece on its own costs 35–55 %
/// more CPU than copying it, a 64 KiB piece up to ~15 % more, and from
/// ~192 KiB on the two cost the same, so larger pieces skip the copy and the
/// staging buffer stays small whatever the response size.
pub(crate) const PASS_THROUGH_BYTES_MIN: usize = 128 << 10;

/// The staging buffer is written out once it holds this much: large enough
/// that a `send` carries many TCP segments, small enough to stay in L2.
const STAGING_FLUSH_BYTES: usize = 256 << 10;

/// Capacity the staging buffer keeps between writes, so an idle connection
/// holds little memory; more is released after each write.
const STAGING_RETAIN_BYTES: usize = 64 << 10;

/// Bound on the bytes of finished responses gathered into one round of
/// writes, so one connection with many ready Fetch responses cannot hold
/// every one of them before the first byte goes out.
const GATHER_BYTES_MAX: usize = 4 << 20;

/// Limits for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Largest request frame accepted (the length prefix). Default 100 MiB,
    /// Kafka's `socket.request.max.bytes`.
    pub max_frame_bytes: usize,
    /// Requests decoded ahead of their responses on one connection; the
    /// socket is not read while this many are outstanding. Default 16.
    /// 0 is treated as 1.
    pub in_flight_max: usize,
    /// Largest body accepted for any API but Produce. Default 8 MiB. Decoded
    /// control-plane messages take several times their wire size in memory,
    /// so this bounds what one request can make the shard allocate; Produce
    /// bodies are not expanded and are bounded by `max_frame_bytes` only.
    pub control_body_bytes_max: usize,
    /// Most entries (array items: topics, partitions, groups, members, ...)
    /// one request may name; a request naming more closes the connection
    /// before its entries are decoded. Default 10,000: each entry costs a
    /// shard decoded memory, a lookup and possibly a cross-core message, so
    /// this bounds the work one request can ask for, far above what a client
    /// sends one broker (a consumer fetching 10,000 partitions from one
    /// shard).
    pub request_entries_max: usize,
    /// Testing aid: when set, every request frame received is also written
    /// to this directory (see `capture.rs`), to seed fuzz corpora with real
    /// client traffic. Default `None`; never set it when serving.
    pub capture_dir: Option<PathBuf>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_frame_bytes: 100 << 20,
            in_flight_max: 16,
            control_body_bytes_max: 8 << 20,
            request_entries_max: 10_000,
            capture_dir: None,
        }
    }
}

impl ConnectionConfig {
    /// Sets `max_frame_bytes`.
    pub fn with_max_frame_bytes(mut self, max_frame_bytes: usize) -> Self {
        self.max_frame_bytes = max_frame_bytes;
        self
    }

    /// Sets `in_flight_max`.
    pub fn with_in_flight_max(mut self, in_flight_max: usize) -> Self {
        self.in_flight_max = in_flight_max;
        self
    }

    /// Sets `control_body_bytes_max`.
    pub fn with_control_body_bytes_max(mut self, control_body_bytes_max: usize) -> Self {
        self.control_body_bytes_max = control_body_bytes_max;
        self
    }

    /// Sets `request_entries_max`.
    pub fn with_request_entries_max(mut self, request_entries_max: usize) -> Self {
        self.request_entries_max = request_entries_max;
        self
    }

    fn body_limits(&self) -> codec::BodyLimits {
        codec::BodyLimits {
            control_body_bytes_max: self.control_body_bytes_max,
            entries_max: self.request_entries_max,
        }
    }
    /// Sets `capture_dir`.
    pub fn with_capture_dir(mut self, capture_dir: Option<PathBuf>) -> Self {
        self.capture_dir = capture_dir;
        self
    }
}

/// The engine's side of a connection: turns one request into its response.
///
/// Called on the shard that accepted the connection; the future need not be
/// `Send`. Several calls for one connection run concurrently (up to
/// `in_flight_max`); their responses are still sent in request order.
pub trait Handler {
    /// Answers `request`. `None` sends nothing, which is right only for a
    /// Produce request with `acks = 0` (the client expects no response);
    /// anything else left unanswered makes the client time out.
    fn handle(&self, request: Request) -> impl Future<Output = Option<ResponseBody>>;
}

/// A connection's authentication exchange (SASL), run before any other
/// request on it is served. The engine implements it; net only sequences
/// it: one request at a time, each answered before the next is read, every
/// frame at most [`AUTH_FRAME_BYTES_MAX`], at most [`AUTH_ROUNDS_MAX`]
/// requests and [`AUTH_TIMEOUT`] in all.
///
/// Re-authentication (KIP-368): when [`Authenticator::session_lifetime`]
/// is `Some`, the authenticator stays with the served connection. A
/// SaslHandshake or SaslAuthenticate on it goes to [`Authenticator::step`]
/// again (the client sends them with nothing else in flight), and a
/// successful exchange starts a new lifetime. Any other request arriving
/// after the lifetime has run out closes the connection, as Kafka's
/// `connections.max.reauth.ms` does.
pub trait Authenticator {
    /// Answers one request of the exchange (ApiVersions, SaslHandshake,
    /// SaslAuthenticate, or anything else a client sends too early).
    fn step(&mut self, request: Request) -> impl Future<Output = AuthStep>;

    /// How long an authentication holds before the client must
    /// re-authenticate; `None`: for the life of the connection.
    fn session_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A served connection's session that must be renewed by re-authenticating.
struct Reauthentication<A> {
    authenticator: A,
    lifetime: Duration,
    expires_at: Instant,
}

/// What an [`Authenticator`] made of one request.
#[derive(Debug)]
pub enum AuthStep {
    /// Send this answer and read the next request of the exchange.
    Continue(ResponseBody),
    /// Send this answer; the peer is `principal` from now on and the
    /// connection is served normally.
    Authenticated {
        /// The last answer of the exchange.
        response: ResponseBody,
        /// Who the peer proved to be (`User:alice`).
        principal: String,
    },
    /// Send the answer, if any, then close the connection.
    Refused {
        /// The answer carrying the error code, if the client gets one.
        response: Option<ResponseBody>,
        /// Why, for the log (never sent to the client).
        reason: String,
    },
}

/// Largest frame accepted before a connection has authenticated: a SASL
/// exchange is a few small messages (a SCRAM message is under 1 KiB), so an
/// unauthenticated peer cannot make the shard hold a large frame.
pub const AUTH_FRAME_BYTES_MAX: usize = 64 << 10;

/// Requests a connection may send before it has authenticated (ApiVersions,
/// SaslHandshake and two SCRAM rounds need four; room for a retried
/// ApiVersions).
pub const AUTH_ROUNDS_MAX: usize = 8;

/// Longest an authentication exchange may take from the first byte, so a
/// peer that never finishes cannot hold a connection slot.
pub const AUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A connection that needs no authentication (PLAINTEXT and SSL listeners).
#[derive(Debug, Clone, Copy)]
pub struct NoAuthentication;

impl Authenticator for NoAuthentication {
    async fn step(&mut self, _request: Request) -> AuthStep {
        AuthStep::Refused {
            response: None,
            reason: "no authentication is configured".to_owned(),
        }
    }
}

/// Serves one Kafka connection until the peer closes it (`Ok`) or something
/// goes wrong (`Err`). Must run inside a glommio executor: handlers are
/// spawned as local tasks on it.
///
/// Bad input (a frame length out of bounds, a frame cut short, a header or
/// body that does not parse, an unsupported API) is logged as one `warn!`
/// with the peer address and ends only this connection. An ApiVersions
/// request at an unsupported version is answered (ApiVersions v0,
/// UNSUPPORTED_VERSION, the supported list) without calling the handler.
pub async fn serve_connection<S: Transport, H: Handler + 'static>(
    stream: S,
    handler: Rc<H>,
    config: &ConnectionConfig,
    share: &ConnectionShare,
) -> Result<(), NetError> {
    serve_transport(stream, handler, None::<NoAuthentication>, config, share).await
}

/// [`serve_connection`] after an authentication exchange: until
/// `authenticator` says [`AuthStep::Authenticated`], every request goes to
/// it, one at a time; a refusal closes the connection.
pub async fn serve_authenticated<S: Transport, H: Handler + 'static, A: Authenticator>(
    stream: S,
    handler: Rc<H>,
    authenticator: A,
    config: &ConnectionConfig,
    share: &ConnectionShare,
) -> Result<(), NetError> {
    serve_transport(stream, handler, Some(authenticator), config, share).await
}

async fn serve_transport<S: Transport, H: Handler + 'static, A: Authenticator>(
    stream: S,
    handler: Rc<H>,
    authenticator: Option<A>,
    config: &ConnectionConfig,
    share: &ConnectionShare,
) -> Result<(), NetError> {
    let peer = stream
        .peer_addr()
        .map_or_else(|| "unknown peer".to_owned(), |address| address.to_string());
    let stream = Rc::new(RefCell::new(stream));
    let reader = StreamHalf(Rc::clone(&stream));
    let writer = StreamHalf(stream);
    let result = serve(reader, writer, handler, authenticator, config, share).await;
    match &result {
        Ok(()) => tracing::debug!(%peer, "Kafka connection closed by peer"),
        Err(error) if error.is_bad_input() => {
            tracing::warn!(%peer, %error, "closing Kafka connection: bad input");
        }
        Err(error @ NetError::Encode { .. }) => {
            tracing::error!(%peer, %error, "closing Kafka connection: handler response not encodable");
        }
        Err(error) => tracing::debug!(%peer, %error, "Kafka connection ended"),
    }
    result
}

/// The loop behind [`serve_connection`], over any pair of byte-stream
/// halves.
pub(crate) async fn serve<R, W, H, A>(
    mut reader: R,
    mut writer: W,
    handler: Rc<H>,
    authenticator: Option<A>,
    config: &ConnectionConfig,
    share: &ConnectionShare,
) -> Result<(), NetError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    H: Handler + 'static,
    A: Authenticator,
{
    let mut frames = FrameReader::new(config.max_frame_bytes);
    let mut reauthentication = None;
    if let Some(mut authenticator) = authenticator {
        let exchange = authenticate(&mut reader, &mut writer, &mut frames, &mut authenticator, config);
        let timeout = async {
            glommio::timer::sleep(AUTH_TIMEOUT).await;
            Err(NetError::Authentication {
                reason: format!("not authenticated within {AUTH_TIMEOUT:?}"),
            })
        };
        match futures_lite::future::or(exchange, timeout).await? {
            Some(principal) => tracing::debug!(%principal, "Kafka connection authenticated"),
            None => return Ok(()),
        }
        reauthentication = authenticator.session_lifetime().map(|lifetime| Reauthentication {
            lifetime,
            expires_at: Instant::now() + lifetime,
            authenticator,
        });
    }
    let pipeline = Pipeline::new(config.in_flight_max.max(1), Rc::clone(&share.activity));
    let mut read_half = pin!(read_loop(
        &mut reader,
        frames,
        &pipeline,
        handler,
        reauthentication,
        config,
        &share.request_memory
    ));
    let mut write_half = pin!(write_loop(&mut writer, &pipeline));
    let mut read_finished = false;
    poll_fn(|context: &mut Context<'_>| {
        if !read_finished {
            match read_half.as_mut().poll(context) {
                Poll::Ready(Ok(())) => read_finished = true,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {}
            }
        }
        // Ends with Ok only once the reader has closed the pipeline and every
        // response has been written.
        write_half.as_mut().poll(context)
    })
    .await
}

/// The authentication exchange: one request at a time, each answered before
/// the next is read. `Ok(Some(principal))` once authenticated, `Ok(None)`
/// if the peer closed cleanly first.
async fn authenticate<R, W, A>(
    reader: &mut R,
    writer: &mut W,
    frames: &mut FrameReader,
    authenticator: &mut A,
    config: &ConnectionConfig,
) -> Result<Option<String>, NetError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    A: Authenticator,
{
    let limits = codec::BodyLimits {
        control_body_bytes_max: AUTH_FRAME_BYTES_MAX,
        entries_max: config.request_entries_max,
    };
    let mut staging = Vec::new();
    for _ in 0..AUTH_ROUNDS_MAX {
        let Some(frame_bytes) = frames.next_length(reader).await? else {
            return Ok(None);
        };
        if frame_bytes > AUTH_FRAME_BYTES_MAX {
            return Err(NetError::FrameLength {
                length: i32::try_from(frame_bytes).unwrap_or(i32::MAX),
                max_frame_bytes: AUTH_FRAME_BYTES_MAX,
            });
        }
        let frame = frames.next_frame(reader).await?.ok_or(NetError::FrameTruncated {
            expected_bytes: frame_bytes,
            received_bytes: 0,
        })?;
        let request = match codec::decode_frame(&frame, limits)? {
            Decoded::Request(request) => request,
            Decoded::ApiVersionsUnsupported { correlation_id } => {
                let frame = unsupported_api_versions_frame(correlation_id)?;
                write_frames(writer, &mut staging, &[frame]).await?;
                continue;
            }
        };
        let to = ResponseTo::of(&request.header);
        let step = authenticator.step(request).await;
        let (response, outcome) = match step {
            AuthStep::Continue(response) => (Some(response), None),
            AuthStep::Authenticated { response, principal } => (Some(response), Some(Ok(principal))),
            AuthStep::Refused { response, reason } => (response, Some(Err(reason))),
        };
        if let Some(frame) = encode(to, Some(response))? {
            write_frames(writer, &mut staging, &[frame]).await?;
        }
        match outcome {
            None => {}
            Some(Ok(principal)) => return Ok(Some(principal)),
            Some(Err(reason)) => return Err(NetError::Authentication { reason }),
        }
    }
    Err(NetError::Authentication {
        reason: format!("not authenticated after {AUTH_ROUNDS_MAX} requests"),
    })
}

async fn read_loop<R: AsyncRead + Unpin, H: Handler + 'static, A: Authenticator>(
    reader: &mut R,
    mut frames: FrameReader,
    pipeline: &Pipeline,
    handler: Rc<H>,
    mut reauthentication: Option<Reauthentication<A>>,
    config: &ConnectionConfig,
    memory: &RequestMemory,
) -> Result<(), NetError> {
    loop {
        pipeline.reserve().await;
        // The frame's bytes are held from the shard's budget before its body
        // is read, until its handler has answered.
        let Some(frame_bytes) = frames.next_length(reader).await? else {
            pipeline.release(1);
            pipeline.close();
            return Ok(());
        };
        let held = memory.hold(frame_bytes).await;
        let frame = frames.next_frame(reader).await?.ok_or(NetError::FrameTruncated {
            expected_bytes: frame_bytes,
            received_bytes: 0,
        })?;
        pipeline.activity.request_read(Instant::now());
        if let Some(dir) = &config.capture_dir {
            capture::record(dir, &frame);
        }
        match codec::decode_frame(&frame, config.body_limits())? {
            Decoded::Request(request) => {
                drop(frame);
                if let Some(session) = reauthentication.as_mut() {
                    let api_key = request.header.api_key;
                    if api_key == apis::SASL_HANDSHAKE || api_key == apis::SASL_AUTHENTICATE {
                        let open = reauthenticate(session, request, pipeline).await?;
                        drop(held);
                        if !open {
                            pipeline.close();
                            return Ok(());
                        }
                        continue;
                    }
                    if Instant::now() >= session.expires_at {
                        return Err(NetError::Authentication {
                            reason: format!(
                                "session expired: not re-authenticated within {:?} (API key {api_key})",
                                session.lifetime
                            ),
                        });
                    }
                }
                let to = ResponseTo::of(&request.header);
                let handler = Rc::clone(&handler);
                let task = glommio::spawn_local(async move {
                    let response = handler.handle(request).await;
                    drop(held);
                    response
                })
                .detach();
                pipeline.push(InFlight::Handler { to, task });
            }
            Decoded::ApiVersionsUnsupported { correlation_id } => {
                let frame = unsupported_api_versions_frame(correlation_id)?;
                pipeline.push(InFlight::Ready(frame));
            }
        }
    }
}

/// One request of a re-authentication (KIP-368) on a served connection,
/// answered in order through the pipeline. Returns whether the connection
/// stays open: a refusal sends its answer and then closes it.
async fn reauthenticate<A: Authenticator>(
    session: &mut Reauthentication<A>,
    request: Request,
    pipeline: &Pipeline,
) -> Result<bool, NetError> {
    let to = ResponseTo::of(&request.header);
    let step = session.authenticator.step(request).await;
    let (response, open) = match step {
        AuthStep::Continue(response) => (Some(response), true),
        AuthStep::Authenticated { response, principal } => {
            session.expires_at = Instant::now() + session.lifetime;
            tracing::debug!(%principal, lifetime = ?session.lifetime, "Kafka connection re-authenticated");
            (Some(response), true)
        }
        AuthStep::Refused { response, reason } => {
            tracing::warn!(%reason, "re-authentication refused; closing the connection");
            (response, false)
        }
    };
    match encode(to, Some(response))? {
        Some(frame) => pipeline.push(InFlight::Ready(frame)),
        // Nothing to answer: the slot reserved for this request is free.
        None => pipeline.release(1),
    }
    Ok(open)
}

async fn write_loop<W: AsyncWrite + Unpin>(writer: &mut W, pipeline: &Pipeline) -> Result<(), NetError> {
    let mut staging = Vec::new();
    let mut frames = Vec::new();
    loop {
        let Some(first) = pipeline.pop().await else {
            return Ok(());
        };
        let mut answered = 1;
        let mut gathered_bytes = 0;
        if let Some(frame) = first.into_frame().await? {
            gathered_bytes += frame.wire_bytes();
            frames.push(frame);
        }
        // Gather responses whose handlers have already finished.
        while gathered_bytes < GATHER_BYTES_MAX {
            let Some(frame) = pipeline.pop_finished().await? else {
                break;
            };
            answered += 1;
            if let Some(frame) = frame {
                gathered_bytes += frame.wire_bytes();
                frames.push(frame);
            }
        }
        write_frames(writer, &mut staging, &frames).await?;
        frames.clear();
        pipeline.activity.answered(answered);
        pipeline.release(answered);
    }
}

/// Writes `frames` in order: small pieces through `staging`, large ones
/// straight from their buffers.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    staging: &mut Vec<u8>,
    frames: &[ResponseFrame],
) -> io::Result<()> {
    for frame in frames {
        staging.extend_from_slice(&frame.prefix);
        for piece in &frame.pieces {
            if piece.len() >= PASS_THROUGH_BYTES_MIN {
                if !staging.is_empty() {
                    writer.write_all(staging).await?;
                    staging.clear();
                }
                writer.write_all(piece).await?;
            } else {
                staging.extend_from_slice(piece);
                if staging.len() >= STAGING_FLUSH_BYTES {
                    writer.write_all(staging).await?;
                    staging.clear();
                }
            }
        }
    }
    if !staging.is_empty() {
        writer.write_all(staging).await?;
        staging.clear();
    }
    if staging.capacity() > STAGING_RETAIN_BYTES {
        staging.shrink_to(STAGING_RETAIN_BYTES);
    }
    writer.flush().await
}

/// A request whose response has not been written yet.
enum InFlight {
    /// Its handler runs as a task; the response is encoded when it ends.
    Handler {
        to: ResponseTo,
        task: JoinHandle<Option<ResponseBody>>,
    },
    /// Answered by net itself.
    Ready(ResponseFrame),
}

impl InFlight {
    /// Waits for the response and encodes it; `None` = send nothing.
    async fn into_frame(self) -> Result<Option<ResponseFrame>, NetError> {
        match self {
            InFlight::Ready(frame) => Ok(Some(frame)),
            InFlight::Handler { to, task } => encode(to, task.await),
        }
    }
}

fn encode(to: ResponseTo, output: Option<Option<ResponseBody>>) -> Result<Option<ResponseFrame>, NetError> {
    let Some(response) = output else {
        return Err(NetError::HandlerCancelled {
            api_key: to.api_key,
            correlation_id: to.correlation_id,
        });
    };
    let Some(body) = response else {
        return Ok(None);
    };
    codec::encode_response(to, body)
        .map(Some)
        .map_err(|source| NetError::Encode {
            api_key: to.api_key,
            api_version: to.api_version,
            source,
        })
}

/// The ordered, bounded queue between the two halves. Never borrowed across
/// an await; each half parks its waker here and the other wakes it.
struct Pipeline {
    state: RefCell<PipelineState>,
    /// Mirrors how many requests are unanswered, for the shard.
    activity: Rc<ConnectionActivity>,
}

struct PipelineState {
    /// Requests not yet taken by the writer, in arrival order.
    queue: VecDeque<InFlight>,
    /// Requests reserved by the reader and not yet answered (≤ `capacity`).
    outstanding: usize,
    /// `in_flight_max`.
    capacity: usize,
    /// The reader saw a clean end of stream; nothing more will be pushed.
    closed: bool,
    reader_waker: Option<Waker>,
    writer_waker: Option<Waker>,
}

impl Pipeline {
    fn new(capacity: usize, activity: Rc<ConnectionActivity>) -> Self {
        assert!(capacity >= 1);
        Pipeline {
            activity,
            state: RefCell::new(PipelineState {
                queue: VecDeque::with_capacity(capacity),
                outstanding: 0,
                capacity,
                closed: false,
                reader_waker: None,
                writer_waker: None,
            }),
        }
    }

    /// Waits until fewer than `capacity` requests are outstanding, then
    /// counts one more.
    async fn reserve(&self) {
        poll_fn(|context| {
            let mut state = self.state.borrow_mut();
            if state.outstanding < state.capacity {
                state.outstanding += 1;
                Poll::Ready(())
            } else {
                state.reader_waker = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Answers for `count` requests have been written (or none was owed).
    fn release(&self, count: usize) {
        let waker = {
            let mut state = self.state.borrow_mut();
            assert!(count <= state.outstanding, "released more than reserved");
            state.outstanding -= count;
            state.reader_waker.take()
        };

        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn push(&self, entry: InFlight) {
        let waker = {
            let mut state = self.state.borrow_mut();
            assert!(!state.closed);
            assert!(state.queue.len() < state.capacity);
            state.queue.push_back(entry);
            state.writer_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn close(&self) {
        let waker = {
            let mut state = self.state.borrow_mut();
            state.closed = true;
            state.writer_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The oldest request, waiting for one; `None` once closed and drained.
    async fn pop(&self) -> Option<InFlight> {
        poll_fn(|context| {
            let mut state = self.state.borrow_mut();
            if let Some(entry) = state.queue.pop_front() {
                return Poll::Ready(Some(entry));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            state.writer_waker = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The oldest request's encoded response if it is already available
    /// (`Ok(Some(None))` for "answered with nothing"); `Ok(None)` when the
    /// queue is empty or its front is still running. Never waits.
    async fn pop_finished(&self) -> Result<Option<Option<ResponseFrame>>, NetError> {
        let front = self.state.borrow_mut().queue.pop_front();
        match front {
            None => Ok(None),
            Some(InFlight::Ready(frame)) => Ok(Some(Some(frame))),
            Some(InFlight::Handler { to, mut task }) => match futures_lite::future::poll_once(&mut task).await {
                Some(output) => encode(to, output).map(Some),
                None => {
                    self.state.borrow_mut().queue.push_front(InFlight::Handler { to, task });
                    Ok(None)
                }
            },
        }
    }
}

/// One direction of a socket shared by the reader and the writer. glommio's
/// stream keeps separate readiness state for each direction, and a borrow
/// lasts only for one poll, so the two halves never contend. Every byte read
/// or written through it is counted (`stats.rs`).
struct StreamHalf<S>(Rc<RefCell<S>>);

fn stream_busy() -> io::Error {
    io::Error::other("socket polled re-entrantly")
}

impl<S: AsyncRead + Unpin> AsyncRead for StreamHalf<S> {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let polled = match self.0.try_borrow_mut() {
            Ok(mut stream) => Pin::new(&mut *stream).poll_read(context, buf),
            Err(_) => Poll::Ready(Err(stream_busy())),
        };
        if let Poll::Ready(Ok(bytes)) = polled {
            crate::stats::record_received(bytes);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StreamHalf<S> {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = match self.0.try_borrow_mut() {
            Ok(mut stream) => Pin::new(&mut *stream).poll_write(context, buf),
            Err(_) => Poll::Ready(Err(stream_busy())),
        };
        if let Poll::Ready(Ok(bytes)) = polled {
            crate::stats::record_sent(bytes);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.try_borrow_mut() {
            Ok(mut stream) => Pin::new(&mut *stream).poll_flush(context),
            Err(_) => Poll::Ready(Err(stream_busy())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.try_borrow_mut() {
            Ok(mut stream) => Pin::new(&mut *stream).poll_close(context),
            Err(_) => Poll::Ready(Err(stream_busy())),
        }
    }
}

/// The ApiVersions v0 answer to an ApiVersions request of a version this
/// broker does not speak (UNSUPPORTED_VERSION and the versions it does).
fn unsupported_api_versions_frame(correlation_id: i32) -> Result<ResponseFrame, NetError> {
    codec::api_versions_unsupported_frame(correlation_id).map_err(|source| NetError::Encode {
        api_key: crate::apis::API_VERSIONS,
        api_version: 0,
        source,
    })
}
