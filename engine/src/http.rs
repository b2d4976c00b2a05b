//! The HTTP endpoint (`--http-listen`, default 127.0.0.1:9644): `/metrics`
//! for Prometheus, `/health` and `/ready` for orchestrators.
//!
//! A minimal HTTP/1.1 server, run as a glommio task on shard 0 beside its
//! Kafka work. Its port is bound on the main thread with the Kafka ports,
//! before anything touches the data directory (a port in use stops the
//! start with an error naming it), and shard 0 listens as soon as it is up,
//! before its partitions are open, so `/health` and `/ready` answer during
//! start-up too.
//!
//! ```text
//! client ──TCP──► shard 0: accept (at most HTTP_CONNECTIONS_MAX at once; more are closed at once)
//!                  │ read the request head: at most HTTP_HEAD_BYTES_MAX, within HTTP_READ_TIMEOUT
//!                  │ parse it (httparse): method, path, Accept; garbage → 400, too large → 431
//!                  ├─ GET /metrics ──► every shard: snapshot (Shard::invoke_on) ──► render (metrics)
//!                  ├─ GET /health  ──► every shard: ping within HEALTH_PING_TIMEOUT
//!                  ├─ GET /ready   ──► metadata leader? every shard: image applied, listeners bound?
//!                  ├─ other path → 404; other method → 405
//!                  │ write the response (Content-Length, Connection: close) within HTTP_WRITE_TIMEOUT
//!                  └ close (after discarding what the client still sends, briefly)
//! ```
//!
//! One request per connection (`Connection: close`): scrapes and probes are
//! seconds apart, so keep-alive would save nothing worth its state. No
//! request body is read. Nothing a socket sends can panic this code: bytes
//! are only handed to httparse and compared; every wait is bounded.
//!
//! The endpoint is read-only and unauthenticated, like Redpanda's admin
//! port's metrics; on a non-loopback address a warning says so at every
//! start (docs/operations.md, Monitoring).

use std::{cell::Cell, cell::RefCell, net::SocketAddr, rc::Rc, time::Duration};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use socket2::Socket;

use crate::{
    config::EngineConfig,
    metrics::{self, within, Format, LeftOut},
    runtime::StartError,
    shard::Shard,
};

/// HTTP connections served at once. A Prometheus server or two and an
/// orchestrator's probes need a handful; past this a connection is closed
/// on arrival, so a flood of them costs shard 0 an accept and a close each.
pub(crate) const HTTP_CONNECTIONS_MAX: usize = 16;

/// Largest request head read (request line and headers). Scrapers and
/// probes send a few hundred bytes; 8 KiB is what common servers allow.
pub(crate) const HTTP_HEAD_BYTES_MAX: usize = 8 << 10;

/// Headers parsed at most; more is answered 431 like an oversized head.
const HTTP_HEADERS_MAX: usize = 32;

/// Longest wait for a whole request head from the first byte on.
pub(crate) const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a response to be written (a slow reader of a large
/// `/metrics` page gives up its slot after this).
const HTTP_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After the response, how long and how much of what the client still
/// sends is read and dropped before closing, so unread bytes do not turn
/// the close into a reset that could discard the response on its way.
const HTTP_LINGER_TIMEOUT: Duration = Duration::from_millis(200);
const HTTP_LINGER_BYTES_MAX: usize = 64 << 10;

/// `/health`: how long every shard has to answer a ping.
const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// `/ready`: how long a shard may take to reach this node's metadata image
/// (it is usually there; a change being applied takes milliseconds).
const READY_EPOCH_WAIT: Duration = Duration::from_secs(1);

/// `/ready`: how often a shard checks its applied epoch while waiting.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The endpoint's socket: bound on the main thread, listened on by shard 0.
#[derive(Debug)]
pub(crate) struct HttpSocket(Socket);

/// Binds `--http-listen` (exclusively: another process on the port stops
/// the start); `None` when it is `off`.
pub(crate) fn bind(config: &EngineConfig) -> Result<Option<HttpSocket>, StartError> {
    let Some(address) = config.http_listen.0 else {
        return Ok(None);
    };
    crate::listeners::bind_exclusive(address)
        .map(|socket| Some(HttpSocket(socket)))
        .map_err(|e| {
            StartError(format!(
                "binding the HTTP endpoint (--http-listen) on {address}: {e} (another process holds the port; \
                 pick a free one, or --http-listen off)"
            ))
        })
}

impl HttpSocket {
    /// Starts listening; the glommio listener is made on shard 0's executor.
    fn listen(self) -> std::io::Result<TcpListener> {
        use std::os::fd::{FromRawFd, IntoRawFd};
        self.0.listen(HTTP_CONNECTIONS_MAX as i32)?;
        // SAFETY: the descriptor is a bound, listening TCP socket whose
        // ownership moves here (`into_raw_fd` gives it up).
        Ok(unsafe { TcpListener::from_raw_fd(self.0.into_raw_fd()) })
    }
}

/// The endpoint's state on shard 0.
struct Endpoint {
    shard: Rc<Shard>,
    /// Connections being served now (≤ `HTTP_CONNECTIONS_MAX`).
    active: Cell<usize>,
    /// Connections closed on arrival because `active` was at the bound.
    refused: Cell<u64>,
    /// What the metrics bounds left out, summed over scrapes.
    left_out: RefCell<LeftOut>,
}

/// Serves the endpoint on shard 0 until `stopped`.
pub(crate) async fn serve(shard: Rc<Shard>, socket: HttpSocket, mut stopped: tokio::sync::watch::Receiver<bool>) {
    assert_eq!(shard.id, 0, "the HTTP endpoint runs on shard 0");
    let listener = match socket.listen() {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "the HTTP endpoint cannot listen; /metrics, /health and /ready are off");
            return;
        }
    };
    let address = listener.local_addr().ok();
    tracing::info!(address = ?address, "HTTP endpoint listening: /metrics, /health, /ready");
    let endpoint = Rc::new(Endpoint {
        shard,
        active: Cell::new(0),
        refused: Cell::new(0),
        left_out: RefCell::new(LeftOut::new()),
    });
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = stopped.wait_for(|stop| *stop).await;
            None
        })
        .await;
        let Some(accepted) = accepted else { break };
        match accepted {
            Ok(stream) => endpoint.admit(stream),
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tracing::debug!(refused = endpoint.refused.get(), "HTTP endpoint stopped");
}

/// Counts a connection as served while it lives.
struct Active(Rc<Endpoint>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
    }
}

impl Endpoint {
    /// Serves `stream` as a task of its own, or closes it at once when
    /// `HTTP_CONNECTIONS_MAX` are being served.
    fn admit(self: &Rc<Self>, stream: TcpStream) {
        if self.active.get() >= HTTP_CONNECTIONS_MAX {
            self.refused.set(self.refused.get() + 1);
            if self.refused.get().is_power_of_two() {
                tracing::warn!(
                    refused = self.refused.get(),
                    "refusing an HTTP connection: {HTTP_CONNECTIONS_MAX} are being served"
                );
            }
            return;
        }
        self.active.set(self.active.get() + 1);
        assert!(
            self.active.get() <= HTTP_CONNECTIONS_MAX,
            "HTTP connections are bounded"
        );
        let active = Active(Rc::clone(self));
        glommio::spawn_local(async move {
            let endpoint = Rc::clone(&active.0);
            endpoint.serve_connection(stream).await;
            drop(active);
        })
        .detach();
    }

    async fn serve_connection(&self, mut stream: TcpStream) {
        let response = match within(HTTP_READ_TIMEOUT, read_head(&mut stream)).await {
            None => Some(Response::text(408, "request head not received in time\n")),
            Some(Err(_)) | Some(Ok(Head::Closed)) => None,
            Some(Ok(Head::TooLarge)) => Some(Response::text(431, "request head too large\n")),
            Some(Ok(Head::Garbage(why))) => Some(Response::text(400, &format!("bad request: {why}\n"))),
            Some(Ok(Head::Request(request))) => Some(self.answer(&request).await),
        };
        if let Some(response) = response {
            let _ = within(HTTP_WRITE_TIMEOUT, write_response(&mut stream, &response)).await;
        }
        let _ = within(HTTP_LINGER_TIMEOUT, linger(&mut stream)).await;
    }

    async fn answer(&self, request: &ParsedRequest) -> Response {
        let head_only = request.method == "HEAD";
        if request.method != "GET" && !head_only {
            return Response::text(405, "only GET and HEAD are served\n").with_header("Allow", "GET, HEAD");
        }
        let path = request.path.split('?').next().unwrap_or_default();
        let response = match path {
            "/metrics" => self.metrics(request.accept.as_deref()).await,
            "/health" => health(&self.shard).await,
            "/ready" => ready(&self.shard).await,
            _ => Response::text(404, "not found: the endpoint serves /metrics, /health and /ready\n"),
        };
        Response { head_only, ..response }
    }

    async fn metrics(&self, accept: Option<&str>) -> Response {
        let format = Format::from_accept(accept);
        let gathered = metrics::gather(&self.shard).await;
        let body = metrics::render(&gathered, &mut self.left_out.borrow_mut(), format);
        Response {
            status: 200,
            content_type: format.content_type(),
            extra_headers: Vec::new(),
            body: body.into_bytes(),
            head_only: false,
        }
    }
}

/// `/health`: 200 when every shard answers a ping within
/// `HEALTH_PING_TIMEOUT`, else 503 naming the ones that did not.
async fn health(shard: &Rc<Shard>) -> Response {
    let pings = (0..shard.shard_count).map(|k| {
        let ping = shard.invoke_on(k, |_: Rc<Shard>| async {});
        async move { (k, within(HEALTH_PING_TIMEOUT, ping).await) }
    });
    let silent: Vec<String> = futures_util::future::join_all(pings)
        .await
        .into_iter()
        .filter(|(_, answer)| !matches!(answer, Some(Ok(()))))
        .map(|(k, _)| k.to_string())
        .collect();
    if silent.is_empty() {
        Response::text(200, &format!("ok: all {} shards answered\n", shard.shard_count))
    } else {
        Response::text(
            503,
            &format!(
                "unhealthy: shard {} did not answer within {HEALTH_PING_TIMEOUT:?}\n",
                silent.join(", ")
            ),
        )
    }
}

/// `/ready`: 200 once the metadata group has a leader, every shard has
/// applied this node's metadata image (opened its partitions) and every
/// shard's Kafka listeners listen; else 503 with every reason.
async fn ready(shard: &Rc<Shard>) -> Response {
    let mut reasons = Vec::new();
    let leader = shard.meta.status().leader;
    if leader.is_none() {
        reasons.push("no metadata leader is known".to_string());
    }
    let epoch = shard.meta.image().epoch;
    let checks = (0..shard.shard_count).map(|k| {
        let check = shard.invoke_on(k, move |s: Rc<Shard>| async move {
            let deadline = std::time::Instant::now() + READY_EPOCH_WAIT;
            while s.applied_epoch() < epoch && std::time::Instant::now() < deadline {
                glommio::timer::sleep(READY_POLL_INTERVAL).await;
            }
            (s.applied_epoch(), s.probe.listeners_bound.get(), s.is_shutting_down())
        });
        async move { (k, within(READY_EPOCH_WAIT + HEALTH_PING_TIMEOUT, check).await) }
    });
    for (k, answer) in futures_util::future::join_all(checks).await {
        match answer {
            Some(Ok((applied, bound, stopping))) => {
                if applied < epoch {
                    reasons.push(format!(
                        "shard {k} has applied metadata epoch {applied}, this node's image is at {epoch}"
                    ));
                }
                if !bound {
                    reasons.push(format!("shard {k}'s Kafka listeners are not listening yet"));
                }
                if stopping {
                    reasons.push(format!("shard {k} is shutting down"));
                }
            }
            _ => reasons.push(format!("shard {k} did not answer")),
        }
    }
    match (reasons.is_empty(), leader) {
        (true, Some(leader)) => Response::text(
            200,
            &format!(
                "ready: metadata leader {leader}, epoch {epoch} applied on all {} shards, Kafka listeners bound\n",
                shard.shard_count
            ),
        ),
        _ => Response::text(503, &format!("not ready: {}\n", reasons.join("; "))),
    }
}

/// The parts of a request the endpoint looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedRequest {
    method: String,
    path: String,
    accept: Option<String>,
}

/// What reading a request head gave.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Request(ParsedRequest),
    /// The peer closed before sending anything.
    Closed,
    /// More than `HTTP_HEAD_BYTES_MAX` bytes, or more than `HTTP_HEADERS_MAX`
    /// headers, without the head's end.
    TooLarge,
    /// Not an HTTP/1.x request head.
    Garbage(String),
}

/// Reads until the request head is complete, bounded in size.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = HTTP_HEAD_BYTES_MAX.saturating_sub(head.len()).min(chunk.len());
        let Some(space) = chunk.get_mut(..room) else {
            return Ok(Head::TooLarge);
        };
        let read = stream.read(space).await?;
        let Some(bytes) = space.get(..read) else {
            return Ok(Head::Garbage("short read".to_string()));
        };
        if bytes.is_empty() {
            return Ok(if head.is_empty() {
                Head::Closed
            } else {
                Head::Garbage("the connection closed inside the request head".to_string())
            });
        }
        head.extend_from_slice(bytes);
        match parse_head(&head) {
            Some(parsed) => return Ok(parsed),
            None if head.len() >= HTTP_HEAD_BYTES_MAX => return Ok(Head::TooLarge),
            None => {}
        }
    }
}

/// Parses a request head; `None` while it is incomplete.
fn parse_head(bytes: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(_)) => {
            let accept = request
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("accept"))
                .map(|header| String::from_utf8_lossy(header.value).into_owned());
            Some(Head::Request(ParsedRequest {
                method: request.method.unwrap_or_default().to_string(),
                path: request.path.unwrap_or_default().to_string(),
                accept,
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Some(Head::TooLarge),
        Err(error) => Some(Head::Garbage(error.to_string())),
    }
}

/// A response, written whole with `Connection: close`.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    extra_headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    /// HEAD: the headers of the GET answer, no body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            extra_headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            head_only: false,
        }
    }

    fn with_header(mut self, name: &'static str, value: &'static str) -> Response {
        self.extra_headers.push((name, value));
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

async fn write_response(stream: &mut TcpStream, response: &Response) -> std::io::Result<()> {
    stream.write_all(&response.encode()).await?;
    stream.flush().await?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Reads and drops what the client still sends, until it closes or
/// `HTTP_LINGER_BYTES_MAX` bytes (the caller bounds the time).
async fn linger(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    let mut drained = 0usize;
    while drained < HTTP_LINGER_BYTES_MAX {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => drained += read,
        }
    }
}

/// The address the endpoint is bound to, for the start-up line.
pub(crate) fn describe(socket: Option<&HttpSocket>) -> String {
    socket
        .and_then(|socket| socket.0.local_addr().ok())
        .and_then(|address| address.as_socket())
        .map_or_else(|| "off".to_string(), |address: SocketAddr| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, accept: Option<&str>) -> Head {
        Head::Request(ParsedRequest {
            method: method.into(),
            path: path.into(),
            accept: accept.map(Into::into),
        })
    }

    #[test]
    fn request_heads_parse_or_are_refused_without_panicking() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"),
            Some(request("GET", "/metrics", Some("text/plain")))
        );
        assert_eq!(
            parse_head(b"POST /ready HTTP/1.0\r\n\r\nbody"),
            Some(request("POST", "/ready", None))
        );
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost:"), None, "incomplete");
        assert_eq!(parse_head(b""), None);
        assert!(matches!(
            parse_head(b"\x00\x01\x02\x03\r\n\r\n"),
            Some(Head::Garbage(_))
        ));
        assert!(matches!(
            parse_head(b"GET /metrics SPDY/9\r\n\r\n"),
            Some(Head::Garbage(_))
        ));
        let many: String = (0..HTTP_HEADERS_MAX + 1).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(head.as_bytes()), Some(Head::TooLarge));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for length in 0..2000usize {
            let bytes: Vec<u8> = (0..length % 300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"GET /metrics HTTP/1.1\r\n: \x00\xff"[(seed % 27) as usize]
                })
                .collect();
            let _ = parse_head(&bytes);
        }
    }

    #[test]
    fn responses_close_and_say_their_length() {
        let response = Response::text(405, "no\n").with_header("Allow", "GET, HEAD");
        let text = String::from_utf8(response.encode()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\
             Connection: close\r\nAllow: GET, HEAD\r\n\r\nno\n"
        );
        let head = Response {
            head_only: true,
            ..Response::text(200, "body")
        };
        assert!(String::from_utf8(head.encode())
            .unwrap()
            .ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
    }
}
