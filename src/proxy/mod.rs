//! The data path: accept, learn the destination, detect the protocol, then serve HTTP through
//! the trace layer or copy opaque bytes.
//!
//! ```text
//! accept ─► destination (SO_ORIGINAL_DST | --inbound-target | per request)
//!        ─► detect (h2 preface | HTTP/1 request head | opaque | closed: head too slow)
//!        ─► http::server (h1 engine | hyper h2) ─► trace::TraceLayer ─► http::forward ─► pool ─► upstream
//!        └► opaque::relay ─► upstream
//! ```
//!
//! An HTTP/1 connection idle for `--idle-park-after` leaves its task for the worker's
//! lot (`park`), which starts a task to serve it again when its client sends.

pub(crate) mod accept_backoff;
pub(crate) mod addrs;
pub(crate) mod cap;
pub(crate) mod detect;
pub(crate) mod error;
pub(crate) mod h1;
pub mod http;
pub(crate) mod io;
pub(crate) mod lease;
pub(crate) mod opaque;
pub(crate) mod orig_dst;
pub(crate) mod park;
pub(crate) mod placement;
pub(crate) mod selfloop;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Notify, OwnedSemaphorePermit, TryAcquireError};

use self::addrs::{OwnAddrs, Target};
use self::cap::ConnectionCap;
use self::detect::Protocol;
use self::h1::server::{Parking, ServerSettings};
use self::http::forward::{Destination, Forward};
use self::http::pool::{Pool, PoolSettings};
use self::http::server::ServerLimits;
use self::io::ProxyIo;
use self::lease::ConnectionLease;
use self::park::{Lot, ToPark};
use self::placement::{Handoff, Load, Seat};
use self::selfloop::OwnConnections;
use crate::direction::Direction;
use crate::shutdown::ShutdownHandle;
use crate::trace::{ConnInfo, TraceHandles, TraceLayer};

/// What the data path is told, as plain data. `app` builds it from the settings; a [`Proxy`]
/// is built from it plus the shared [`ProxyHandles`], so one can be built per worker thread.
#[derive(Debug, Clone)]
pub(crate) struct ProxyConfig {
    /// Explicit inbound mode: every inbound connection goes here (`--inbound-target`).
    pub inbound_target: Option<Target>,
    /// Destination ports whose connections are relayed as opaque TCP without detection.
    pub opaque_ports: Vec<u16>,
    /// How long detection waits for the client's first bytes (it reads at most
    /// `server.max_header_bytes`).
    pub detect_timeout: Duration,
    /// Most client connections served at once per listener.
    pub max_connections: usize,
    /// An idle HTTP/1 keep-alive client connection is parked ([`park`]) after this long (not
    /// when it is not shorter than the idle timeout).
    pub idle_park_after: Duration,
    /// Limits of the HTTP server side.
    pub server: ServerLimits,
    /// Settings of the upstream side.
    pub pool: PoolSettings,
    /// stitch's own listener addresses: a destination among them is a forwarding loop.
    pub own_addrs: Vec<SocketAddr>,
}

/// The runtime handles every [`Proxy`] of one process shares.
#[derive(Debug, Clone)]
pub(crate) struct ProxyHandles {
    /// What the trace layer needs (rules, in-flight registry, span sink, metrics).
    pub trace: Arc<TraceHandles>,
    /// stitch's open upstream connections, wherever they were opened: a connection one proxy
    /// accepts may be one another proxy opened (self-loop guard).
    pub own_connections: OwnConnections,
}

impl ProxyHandles {
    /// Handles around `trace`, with an empty upstream-connection registry.
    pub(crate) fn new(trace: TraceHandles) -> Self {
        ProxyHandles {
            trace: Arc::new(trace),
            own_connections: OwnConnections::default(),
        }
    }
}

/// One proxy: its configuration, its upstream pools and the shared handles. The listeners it
/// serves share it behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Proxy {
    config: ProxyConfig,
    own: OwnAddrs,
    pool: Arc<Pool>,
    handles: ProxyHandles,
    /// The HTTP/1 engine's settings, derived once from `config.server`.
    h1: ServerSettings,
    /// Per direction (inbound, outbound): wakes this worker's idle keep-alive connections when
    /// a client waits at the cap ([`cap`]).
    room: [Arc<Notify>; 2],
    /// This worker's parked idle HTTP/1 connections; `None` when parking is off (or its epoll
    /// set could not be made).
    lot: Option<Arc<Lot<Resume>>>,
}

/// What serving a parked connection again needs besides its socket and direction.
#[derive(Debug)]
pub(crate) struct Resume {
    lease: ParkedLease,
    client: SocketAddr,
    destination: Destination,
    /// The connection still counts in this worker's load while parked.
    load: Load,
}

/// A parked connection's lease, kept in the lot's entry itself rather than in an allocation
/// of its own: thousands of small long-lived blocks among the short-lived ones of busy
/// connections fragment the heap (measured: about 0.6 KiB of resident memory per parked
/// connection more). Shared only if something else still held it when it was parked.
#[derive(Debug)]
enum ParkedLease {
    Owned(ConnectionLease),
    Shared(Arc<ConnectionLease>),
}

impl ParkedLease {
    /// The lease, out of its `Arc` when nothing else holds it.
    fn new(lease: Arc<ConnectionLease>) -> Self {
        match Arc::try_unwrap(lease) {
            Ok(lease) => ParkedLease::Owned(lease),
            Err(shared) => ParkedLease::Shared(shared),
        }
    }

    /// The lease to serve the connection with again.
    fn into_arc(self) -> Arc<ConnectionLease> {
        match self {
            ParkedLease::Owned(lease) => Arc::new(lease),
            ParkedLease::Shared(shared) => shared,
        }
    }
}

/// An idle HTTP/1 connection its task hands to the lot.
struct IdleHttp1 {
    parking: Parking<ProxyIo<TcpStream>>,
    client: SocketAddr,
    direction: Direction,
    destination: Destination,
}

impl Proxy {
    /// Builds a proxy with upstream pools of its own (call inside the runtime that serves it:
    /// the pool's idle reaper runs there).
    pub(crate) fn new(config: ProxyConfig, handles: ProxyHandles) -> Self {
        let own = OwnAddrs::new(config.own_addrs.clone());
        let pool = Pool::new(
            config.pool.clone(),
            own.clone(),
            handles.own_connections.clone(),
            handles.trace.metrics.clone(),
        );
        let mut h1 = ServerSettings::new(&config.server)
            .counting_refusals(handles.trace.metrics.clone())
            .parking_after(config.idle_park_after);
        let lot = h1.park_after.and_then(|_| {
            Lot::new(handles.trace.metrics.clone())
                .map(Arc::new)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot make the lot for idle connections; they keep their tasks"))
                .ok()
        });
        if lot.is_none() {
            h1.park_after = None;
        }
        Proxy {
            h1,
            lot,
            config,
            own,
            pool,
            handles,
            room: [Arc::new(Notify::new()), Arc::new(Notify::new())],
        }
    }

    /// This worker's wake-up for its idle connections of `direction`.
    fn room(&self, direction: Direction) -> &Arc<Notify> {
        match direction {
            Direction::Inbound => &self.room[0],
            Direction::Outbound => &self.room[1],
        }
    }

    /// Accepts connections on `listener` until shutdown; each is served on its own task
    /// (tracked, so shutdown can wait for it), here or — when this worker is clearly busier
    /// than another — on that worker (`placement`). `permits` is the listener's connection
    /// limit, shared by every worker accepting on it. A sidecar never stops accepting on
    /// errors: the loop backs off exponentially while they last (e.g. out of file
    /// descriptors) and logs them at most once a second ([`accept_backoff`]).
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        direction: Direction,
        cap: Arc<ConnectionCap>,
        seat: Seat,
        shutdown: ShutdownHandle,
    ) {
        cap.register(self.room(direction));
        let mut backoff = accept_backoff::AcceptBackoff::default();
        loop {
            // A permit first: excess connections wait in the kernel backlog.
            let (permit, (stream, client)) = match cap.permits().clone().try_acquire_owned() {
                Ok(permit) => match accept(&listener, direction, &mut backoff, &shutdown).await {
                    Accepted::Client(stream, client) => (permit, (stream, client)),
                    Accepted::Again => continue,
                    Accepted::Shutdown => return,
                },
                Err(TryAcquireError::Closed) => return,
                // At the cap: once a client is really waiting, ask idle keep-alive connections
                // to make room (again every second while none frees a permit).
                Err(TryAcquireError::NoPermits) => {
                    let (stream, client) =
                        match accept(&listener, direction, &mut backoff, &shutdown).await {
                            Accepted::Client(stream, client) => (stream, client),
                            Accepted::Again => continue,
                            Accepted::Shutdown => return,
                        };
                    let Some(permit) = wait_for_room(&cap, &shutdown).await else {
                        return;
                    };
                    (permit, (stream, client))
                }
            };
            let (worker, load) = seat.place();
            if worker == seat.index() {
                self.clone()
                    .spawn_connection(stream, client, direction, permit, load, &shutdown);
                continue;
            }
            // Out of this worker's reactor, into the other's (two epoll_ctl calls).
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%direction, %client, error = %e, "cannot hand the connection to another worker; closing it");
                    continue;
                }
            };
            let handoff = Handoff {
                stream,
                client,
                direction,
                permit,
                load,
            };
            if seat.hand_off(worker, handoff).is_err() {
                tracing::debug!(%direction, %client, worker, "the chosen worker has stopped; closing the connection");
            }
        }
    }

    /// Runs this worker's lot of parked idle connections until shutdown (then closes them):
    /// each whose client sends is served again on a task of its own.
    pub(crate) async fn serve_parked(self: Arc<Self>, shutdown: ShutdownHandle) {
        let Some(lot) = self.lot.clone() else {
            return;
        };
        let room = self.room.clone();
        let spawner = shutdown.clone();
        lot.run(shutdown, room, move |stream, direction, resume| {
            spawner.spawn(self.clone().resume(stream, direction, resume));
        })
        .await;
    }

    /// Serves the connections other workers hand to this one until shutdown, then those
    /// already queued (accepted means answered).
    pub(crate) async fn serve_handoffs(
        self: Arc<Self>,
        mut queue: UnboundedReceiver<Handoff>,
        shutdown: ShutdownHandle,
    ) {
        loop {
            let handoff = tokio::select! {
                h = queue.recv() => match h {
                    Some(h) => h,
                    None => return,
                },
                _ = shutdown.triggered() => break,
            };
            self.clone().take_handoff(handoff, &shutdown);
        }
        queue.close();
        while let Ok(handoff) = queue.try_recv() {
            self.clone().take_handoff(handoff, &shutdown);
        }
    }

    fn take_handoff(self: Arc<Self>, handoff: Handoff, shutdown: &ShutdownHandle) {
        let Handoff {
            stream,
            client,
            direction,
            permit,
            load,
        } = handoff;
        match TcpStream::from_std(stream) {
            Ok(stream) => self.spawn_connection(stream, client, direction, permit, load, shutdown),
            Err(e) => {
                tracing::debug!(%direction, %client, error = %e, "cannot take over a handed-off connection; closing it")
            }
        }
    }

    /// Serves one accepted connection on its own tracked task of the current worker.
    fn spawn_connection(
        self: Arc<Self>,
        stream: TcpStream,
        client: SocketAddr,
        direction: Direction,
        permit: OwnedSemaphorePermit,
        load: Load,
        shutdown: &ShutdownHandle,
    ) {
        let conn_shutdown = shutdown.clone();
        shutdown.spawn(async move {
            let idle = self
                .handle(stream, client, direction, conn_shutdown, permit)
                .await;
            // The worker's load counts the connection until stitch is done with it here (or
            // in the lot); a tunnel it became lives on under its lease (permit, gauge, bytes,
            // drain).
            if let Some(idle) = idle {
                self.park(idle, load);
            }
        });
    }

    /// Serves a parked connection whose client sent (or closed) again, on the current task,
    /// until it ends or idles long enough to be parked again.
    async fn resume(
        self: Arc<Self>,
        stream: std::net::TcpStream,
        direction: Direction,
        resume: Resume,
    ) {
        let Resume {
            lease,
            client,
            destination,
            load,
        } = resume;
        let lease = lease.into_arc();
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                return tracing::debug!(%direction, %client, error = %e, "cannot serve a parked connection again; closing it");
            }
        };
        let (trace, forward) = self.stack(client, direction, destination.clone(), false, &lease);
        let deadline = tokio::time::Instant::now() + self.h1.header_read_timeout;
        let served = self
            .http1(stream, Bytes::new(), &lease, trace, forward, deadline)
            .await;
        // The last other holder of the lease: parked, it leaves its `Arc` (`ParkedLease`).
        drop(lease);
        let idle = idle_or_ended(served, client, direction, Some(destination));
        if let Some(idle) = idle {
            self.park(idle, load);
        }
    }

    /// Serves HTTP/1 on a client connection (`prefix`: what detection read of it, already
    /// counted). Not an `async fn`: the connection task holds the engine's future and nothing
    /// around it (each async layer costs a poll per request and its own copy of the state).
    fn http1<'a>(
        &'a self,
        stream: TcpStream,
        prefix: Bytes,
        lease: &'a Arc<ConnectionLease>,
        trace: TraceLayer,
        forward: Forward,
        first_head_deadline: tokio::time::Instant,
    ) -> impl Future<Output = Served> + 'a {
        let io = ProxyIo::new(stream).counted(lease.clone());
        http::server::serve_http1(
            io,
            prefix,
            lease,
            trace,
            forward,
            &self.h1,
            lease.shutdown(),
            first_head_deadline,
        )
    }

    /// Moves an idle connection out of the runtime into the lot (closing it when that fails).
    fn park(&self, idle: IdleHttp1, load: Load) {
        let Some(lot) = &self.lot else {
            return;
        };
        let IdleHttp1 {
            parking,
            client,
            direction,
            destination,
        } = idle;
        let (stream, lease) = parking.io.into_counted_parts();
        let Some(lease) = lease else {
            return;
        };
        // Out of this worker's reactor (one epoll_ctl); the lot registers it in its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                return tracing::debug!(%direction, %client, error = %e, "cannot park an idle connection; closing it");
            }
        };
        lot.park(ToPark {
            stream,
            direction,
            idle_since: parking.idle.since,
            idle_deadline: parking.idle.deadline,
            room_closable: lease.idle_close().is_some(),
            resume: Resume {
                lease: ParkedLease::new(lease),
                client,
                destination,
                load,
            },
        });
    }

    /// The trace layer and the forwarder a client connection's HTTP service is built from.
    fn stack(
        &self,
        client: SocketAddr,
        direction: Direction,
        destination: Destination,
        http2: bool,
        lease: &Arc<ConnectionLease>,
    ) -> (TraceLayer, Forward) {
        let conn = ConnInfo {
            direction,
            client,
            destination_port: match &destination {
                Destination::Fixed(t) => Some(t.port()),
                Destination::PerRequest => None,
            },
            http2,
        };
        let trace = TraceLayer::new(self.handles.trace.clone(), conn);
        let protocol = if http2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        };
        let forward = Forward::new(
            self.pool.clone(),
            destination,
            protocol,
            self.handles.trace.metrics.clone(),
            lease,
        );
        (trace, forward)
    }

    /// One client connection: destination, detection, then HTTP or the opaque relay. The
    /// `permit` goes into the connection's lease, which the client socket carries into a
    /// tunnel if the connection becomes one. An HTTP/1 connection that idles long enough
    /// comes back to be parked.
    async fn handle(
        &self,
        mut stream: TcpStream,
        client: SocketAddr,
        direction: Direction,
        shutdown: ShutdownHandle,
        permit: OwnedSemaphorePermit,
    ) -> Option<IdleHttp1> {
        // The first request head's deadline runs from here: detection's wait counts.
        let accepted = tokio::time::Instant::now();
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok()?;
        let lease = Arc::new(
            ConnectionLease::new(permit, &self.handles.trace.metrics, direction, shutdown)
                .closed_for_room_by(self.room(direction).clone()),
        );
        let shutdown = lease.shutdown();
        let destination = self.destination(&stream, client, local, direction)?;
        let (protocol, prefix) = self
            .detect(&mut stream, client, direction, &destination)
            .await?;
        tracing::trace!(%direction, %client, protocol = protocol.as_str(), "detected");
        match protocol {
            Protocol::Opaque => {
                let Destination::Fixed(target) = destination else {
                    tracing::debug!(%client, "non-HTTP connection to the explicit outbound proxy has no destination; closing it");
                    return None;
                };
                self.relay_opaque(stream, prefix, lease, direction, target)
                    .await;
                None
            }
            // Served here rather than in a helper: this future is polled for every request on
            // the connection, and each async layer costs a poll of its own.
            Protocol::Http1 | Protocol::Http2 => {
                let http2 = protocol == Protocol::Http2;
                // Kept to serve the connection again should it be parked.
                let parked_destination =
                    (!http2 && self.lot.is_some()).then(|| destination.clone());
                let (trace, forward) = self.stack(client, direction, destination, http2, &lease);
                if http2 {
                    // The detection prefix was read before counting started; it is replayed
                    // through the counter, so every client byte is counted once (in the lease).
                    let io = ProxyIo::new(stream)
                        .replaying(prefix)
                        .counted(lease.clone());
                    let activity = lease.counts();
                    let limits = &self.config.server;
                    http::server::serve_http2(io, activity, trace, forward, limits, shutdown).await;
                    None
                } else {
                    // The HTTP/1 engine starts from the detection prefix; it was read before
                    // the counting stream, so it is counted here, once.
                    lease.counts().add_read(prefix.len());
                    // The settings hold the header-read timeout already capped.
                    let deadline = accepted + self.h1.header_read_timeout;
                    let served = self
                        .http1(stream, prefix.freeze(), &lease, trace, forward, deadline)
                        .await;
                    idle_or_ended(served, client, direction, parked_destination)
                }
            }
        }
    }

    /// Where the connection's requests go, or `None` (logged) when it must be refused: stitch's
    /// own upstream connection coming back, a destination that is stitch itself, or an inbound
    /// connection with nowhere to go.
    fn destination(
        &self,
        stream: &TcpStream,
        client: SocketAddr,
        local: SocketAddr,
        direction: Direction,
    ) -> Option<Destination> {
        let original = orig_dst::original_dst(stream, local);
        if self
            .handles
            .own_connections
            .is_own(client, original.unwrap_or(local))
        {
            tracing::error!(%direction, %client, "stitch's own upstream connection was redirected back to it; is stitch running as the --proxy-uid given to `stitch iptables`? closing it");
            return None;
        }
        match (direction, &self.config.inbound_target, original) {
            (Direction::Inbound, Some(target), _) => Some(Destination::Fixed(target.clone())),
            (_, _, Some(dst)) if self.own.is_self(dst) => {
                tracing::warn!(%direction, %client, %dst, "refused a connection addressed to stitch itself (forwarding loop)");
                None
            }
            (_, _, Some(dst)) => Some(Destination::Fixed(Target::Addr(dst))),
            (Direction::Outbound, _, None) => Some(Destination::PerRequest),
            (Direction::Inbound, None, None) => {
                tracing::warn!(%client, %local, "inbound connection has no original destination and no --inbound-target; closing it");
                None
            }
        }
    }

    /// The protocol and the bytes read to learn it (replayed to whoever serves the
    /// connection); a declared opaque port skips detection. `None` when the client failed or
    /// its request head stalled (then it was answered `408` where possible and closed).
    async fn detect(
        &self,
        stream: &mut TcpStream,
        client: SocketAddr,
        direction: Direction,
        destination: &Destination,
    ) -> Option<(Protocol, BytesMut)> {
        let metrics = &self.handles.trace.metrics;
        let started = std::time::Instant::now();
        let declared_opaque = match destination {
            Destination::Fixed(t) => self.config.opaque_ports.contains(&t.port()),
            Destination::PerRequest => false,
        };
        if declared_opaque {
            metrics.detected("skipped", started.elapsed());
            return Some((Protocol::Opaque, BytesMut::new()));
        }
        let limits = detect::DetectLimits {
            silence: self.config.detect_timeout,
            head: self.config.server.header_read_timeout,
            max_bytes: self.config.server.max_header_bytes,
        };
        match detect::detect(stream, limits).await {
            Ok((outcome, prefix)) => {
                metrics.detected(outcome.as_str(), started.elapsed());
                if let detect::Outcome::HeadTimeout { http1 } = outcome {
                    tracing::debug!(%direction, %client, "request head incomplete at the header-read timeout; closing");
                    detect::close_stalled(stream, http1).await;
                }
                Some((outcome.protocol()?, prefix))
            }
            Err(e) => {
                metrics.detected("error", started.elapsed());
                tracing::debug!(%direction, %client, error = %e, "connection failed during detection");
                None
            }
        }
    }

    /// Copies bytes both ways to the connection's fixed destination (until the drain's
    /// deadline at the latest).
    async fn relay_opaque(
        &self,
        stream: TcpStream,
        prefix: BytesMut,
        lease: Arc<ConnectionLease>,
        direction: Direction,
        target: Target,
    ) {
        let upstream = match self.pool.connect_tcp(&target).await {
            Ok(u) => u,
            Err(e) => {
                return tracing::debug!(%direction, %target, error = %e.with_cause(), "opaque upstream connect failed");
            }
        };
        let metrics = &self.handles.trace.metrics;
        metrics.opaque_connection(direction);
        if let Err(e) = opaque::relay(stream, prefix, lease, upstream).await {
            tracing::debug!(%direction, %target, error = %e, "opaque connection ended with an error")
        }
    }
}

/// How an HTTP/1 connection's serving ended: closed (or failed), or idle to be parked.
type Served = Result<Option<Parking<ProxyIo<TcpStream>>>, h1::error::Error>;

/// The idle connection to park when serving ended with one and it can be served again
/// (`destination` kept); otherwise how it ended is logged and the connection is done.
fn idle_or_ended(
    served: Served,
    client: SocketAddr,
    direction: Direction,
    destination: Option<Destination>,
) -> Option<IdleHttp1> {
    match (served, destination) {
        (Ok(Some(parking)), Some(destination)) => Some(IdleHttp1 {
            parking,
            client,
            direction,
            destination,
        }),
        (served, _) => {
            http::server::log_http1_end(served);
            None
        }
    }
}

/// What one accept gave.
enum Accepted {
    Client(TcpStream, SocketAddr),
    /// Nothing this time (a client gone before its accept, or a pause after an error).
    Again,
    Shutdown,
}

/// Accepts one client, backing off after errors that are not the client's
/// ([`accept_backoff`]).
async fn accept(
    listener: &TcpListener,
    direction: Direction,
    backoff: &mut accept_backoff::AcceptBackoff,
    shutdown: &ShutdownHandle,
) -> Accepted {
    let accepted = tokio::select! {
        accepted = listener.accept() => accepted,
        _ = shutdown.triggered() => return Accepted::Shutdown,
    };
    match accepted {
        Ok((stream, client)) => {
            backoff.succeeded();
            Accepted::Client(stream, client)
        }
        Err(e) if accept_backoff::is_per_connection(&e) => Accepted::Again,
        Err(e) => {
            let pause = backoff.failed(tokio::time::Instant::now());
            if let Some(unlogged) = pause.log {
                tracing::warn!(%direction, error = %e, pause = ?pause.duration, unlogged, "accept failed; backing off");
            }
            tokio::select! {
                _ = tokio::time::sleep(pause.duration) => Accepted::Again,
                _ = shutdown.triggered() => Accepted::Shutdown,
            }
        }
    }
}

/// Waits for a permit for a client accepted at the cap, asking idle keep-alive connections to
/// make room every [`cap::IDLE_ENOUGH`] until one frees; `None` at shutdown.
async fn wait_for_room(
    cap: &ConnectionCap,
    shutdown: &ShutdownHandle,
) -> Option<OwnedSemaphorePermit> {
    loop {
        cap.make_room();
        tokio::select! {
            permit = cap.permits().clone().acquire_owned() => return permit.ok(),
            _ = tokio::time::sleep(cap::IDLE_ENOUGH) => {}
            _ = shutdown.triggered() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` returns, without running it (or building its arguments).
    fn future_size<A, B, C, D, E, G, F: Future>(_make: fn(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection task is allocated at its future's full size for the connection's whole
    /// life, busy or idle, so this size is most of what an idle keep-alive connection costs
    /// (issue 15; ARCHITECTURE.md, "What a connection costs"). It was 5,328 bytes while the
    /// response writer was an `async fn` holding the body four times and each `async fn`
    /// layer of the HTTP/1 path kept its arguments beside what it made of them; now about
    /// 1,860. A size bound, not a timing one: it fails when a change makes every connection
    /// carry a large state again.
    #[test]
    fn the_connection_task_stays_small() {
        let task = future_size(Proxy::handle);
        println!("connection task future: {task} bytes");
        assert!(task <= 2048, "the connection task grew to {task} bytes");
    }
}
