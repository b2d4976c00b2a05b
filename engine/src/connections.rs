//! The Kafka connections one shard serves: taking them within a bound,
//! closing the idle ones, and closing every idle one at once at shutdown.
//!
//! Lives on its shard (`Rc`, `RefCell`, no locks). Each connection runs as a
//! task of its own (`net::serve_connection`); the table keeps its task handle
//! and the activity `net` updates, and a sweep task closes (cancels) the
//! connections that have had no request for `--connections-max-idle-ms` and
//! have none unanswered.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use glommio::{net::TcpStream, task::JoinHandle};
use shardline_net::{
    ConnectionActivity, ConnectionConfig, ConnectionShare, Handler, NetError, RequestMemory, TlsAcceptor, Transport,
};

use crate::{
    acl::Session,
    config::SecurityProtocol,
    metrics::probe::ConnectionCounts,
    sasl::{SaslSession, SaslSettings},
};

/// What one listener speaks: TLS or not, SASL or not. Made once at start
/// and shared by every shard's accept loop for that listener.
#[derive(Debug)]
pub(crate) struct ListenerSecurity {
    /// The listener's name.
    pub(crate) name: String,
    /// Its protocol (the two fields below follow from it).
    pub(crate) protocol: SecurityProtocol,
    /// The TLS acceptor, on SSL and SASL_SSL listeners.
    pub(crate) tls: Option<TlsAcceptor>,
    /// Users and mechanisms, on SASL_PLAINTEXT and SASL_SSL listeners.
    pub(crate) sasl: Option<Arc<SaslSettings>>,
}

/// Longest pause between two idle sweeps (a shorter idle bound sweeps more
/// often: ten times per bound).
const IDLE_SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(10);

/// One live connection.
struct Live {
    activity: Rc<ConnectionActivity>,
    task: JoinHandle<()>,
}

/// The connections of one shard.
pub(crate) struct Connections {
    /// Live connections by id; at most `live_max`.
    live: RefCell<HashMap<u64, Live>>,
    next_id: Cell<u64>,
    /// This shard's share of `--max-connections`.
    live_max: usize,
    /// `--connections-max-idle-ms`.
    idle_max: Duration,
    /// The shard's budget for request bytes (`--request-memory-bytes`).
    request_memory: Rc<RequestMemory>,
    /// Accepted, refused (the table was full), closed for idling, open: the
    /// shard probe's counts, kept here.
    counts: Rc<ConnectionCounts>,
}

impl Connections {
    pub(crate) fn new(
        live_max: usize,
        idle_max: Duration,
        request_memory_bytes: usize,
        counts: Rc<ConnectionCounts>,
    ) -> Rc<Connections> {
        assert!(live_max >= 1, "a shard takes at least one connection");
        Rc::new(Connections {
            live: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            live_max,
            idle_max,
            request_memory: RequestMemory::new(request_memory_bytes),
            counts,
        })
    }

    /// Serves `stream` as a task of its own, or closes it at once when the
    /// shard already serves its share of `--max-connections`. The
    /// connection's handler is `handler_for` its session (made once the TLS
    /// handshake, if any, is over).
    pub(crate) fn serve<H: Handler + 'static>(
        self: &Rc<Self>,
        stream: TcpStream,
        security: &Arc<ListenerSecurity>,
        handler_for: &Rc<dyn Fn(Rc<Session>) -> H>,
        config: &ConnectionConfig,
    ) {
        let peer = stream.peer_addr().ok();
        if self.live.borrow().len() >= self.live_max {
            let refused = &self.counts.refused;
            refused.set(refused.get() + 1);
            // Once per power of two, so a flood cannot flood the log too.
            if refused.get().is_power_of_two() {
                tracing::warn!(
                    ?peer,
                    live = self.live_max,
                    refused = refused.get(),
                    "refusing a connection: this shard serves its share of --max-connections"
                );
            }
            drop(stream);
            return;
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let share = ConnectionShare {
            request_memory: Rc::clone(&self.request_memory),
            activity: ConnectionActivity::new(Instant::now()),
        };
        let activity = Rc::clone(&share.activity);
        let table = Rc::clone(self);
        let handler_for = Rc::clone(handler_for);
        let config = config.clone();
        let security = Arc::clone(security);
        let task = glommio::spawn_local(async move {
            if let Err(e) = serve_secured(stream, &security, &*handler_for, &config, &share).await {
                tracing::debug!(?peer, listener = %security.name, error = %e, "connection closed");
            }
            table.live.borrow_mut().remove(&id);
            table.count_open();
        })
        .detach();
        let mut live = self.live.borrow_mut();
        live.insert(id, Live { activity, task });
        assert!(live.len() <= self.live_max, "the connection table is bounded");
        drop(live);
        let accepted = &self.counts.accepted;
        accepted.set(accepted.get() + 1);
        self.count_open();
    }

    /// Publishes how many connections are open to the probe.
    fn count_open(&self) {
        let open = self.live.borrow().len();
        self.counts.open.set(u64::try_from(open).unwrap_or(u64::MAX));
    }

    /// Closes every connection idle for at least `idle_max` at `now`.
    fn close_idle(&self, now: Instant, idle_max: Duration) -> usize {
        let idle: Vec<u64> = self
            .live
            .borrow()
            .iter()
            .filter(|(_, live)| live.activity.idle_for(now).is_some_and(|idle| idle >= idle_max))
            .map(|(id, _)| *id)
            .collect();
        for id in &idle {
            // Cancelling drops the connection's future, which closes the socket.
            let removed = self.live.borrow_mut().remove(id);
            if let Some(live) = removed {
                live.task.cancel();
            }
        }
        self.count_open();
        idle.len()
    }

    /// Closes idle connections until `stopping` says so; runs on the shard.
    pub(crate) async fn sweep_idle(self: Rc<Self>, stopping: impl Fn() -> bool) {
        let interval = (self.idle_max / 10).clamp(Duration::from_millis(10), IDLE_SWEEP_INTERVAL_MAX);
        while !stopping() {
            glommio::timer::sleep(interval).await;
            let closed = self.close_idle(Instant::now(), self.idle_max);
            if closed > 0 {
                let closed_idle = &self.counts.closed_idle;
                closed_idle.set(closed_idle.get() + u64::try_from(closed).unwrap_or(u64::MAX));
                tracing::debug!(closed, "closed idle connections");
            }
        }
    }

    /// At shutdown: closes every connection with nothing unanswered now;
    /// returns how many are still serving requests.
    pub(crate) fn close_quiet(&self) -> usize {
        self.close_idle(Instant::now(), Duration::ZERO);
        self.live.borrow().len()
    }

    /// Connections refused and closed for idling, for the shutdown line.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.counts.refused.get(), self.counts.closed_idle.get())
    }
}

/// Serves one accepted connection as its listener says: the TLS handshake
/// first on SSL and SASL_SSL listeners, then the SASL exchange on SASL ones.
/// Each combination is its own monomorphised loop: the plaintext one is the
/// loop over a bare `TcpStream`. The connection's session starts as the
/// certificate's subject (or anonymous) and the SASL exchange replaces it.
async fn serve_secured<H: Handler + 'static>(
    stream: TcpStream,
    security: &ListenerSecurity,
    handler_for: &dyn Fn(Rc<Session>) -> H,
    config: &ConnectionConfig,
    share: &ConnectionShare,
) -> Result<(), NetError> {
    let peer = stream.peer_addr().ok();
    let Some(tls) = &security.tls else {
        let session = Rc::new(Session::new(peer.map(|address| address.ip()), None));
        let handler = Rc::new(handler_for(Rc::clone(&session)));
        return serve_over(stream, session, security, handler, config, share).await;
    };
    let (stream, principal) = match tls.accept(stream).await {
        Ok(accepted) => accepted,
        Err(error) => {
            // A client that does not trust our certificate, one without a
            // required certificate, or plaintext on a TLS port: its fault.
            tracing::info!(?peer, listener = %security.name, %error, "TLS handshake failed");
            return Err(NetError::Io(error));
        }
    };
    if let Some(principal) = &principal {
        tracing::debug!(?peer, listener = %security.name, %principal, "TLS client certificate accepted");
    }
    let session = Rc::new(Session::new(peer.map(|address| address.ip()), principal.as_deref()));
    let handler = Rc::new(handler_for(Rc::clone(&session)));
    serve_over(stream, session, security, handler, config, share).await
}

async fn serve_over<S: Transport, H: Handler + 'static>(
    stream: S,
    session: Rc<Session>,
    security: &ListenerSecurity,
    handler: Rc<H>,
    config: &ConnectionConfig,
    share: &ConnectionShare,
) -> Result<(), NetError> {
    match &security.sasl {
        None => shardline_net::serve_connection(stream, handler, config, share).await,
        Some(sasl) => {
            let exchange = SaslSession::new(Arc::clone(sasl), session);
            shardline_net::serve_authenticated(stream, handler, exchange, config, share).await
        }
    }
}
