//! The data path: accept, learn the destination, detect the protocol, then serve HTTP through
//! the trace layer or copy opaque bytes.
//!
//! ```text
//! accept ─► destination (SO_ORIGINAL_DST | --inbound-target | per request)
//!        ─► detect (h2 preface | HTTP/1 request line | opaque)
//!        ─► http::server (hyper) ─► trace::TraceLayer ─► http::forward ─► pool ─► upstream
//!        └► opaque::relay ─► upstream
//! ```

pub mod addrs;
pub mod counting;
pub mod detect;
pub mod http;
pub mod opaque;
pub mod orig_dst;
pub mod selfloop;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use self::addrs::{OwnAddrs, Target};
use self::detect::Protocol;
use self::http::forward::{Destination, Forward};
use self::http::pool::{Pool, PoolSettings};
use self::http::server::ServerLimits;
use crate::app::Settings;
use crate::direction::Direction;
use crate::shutdown::ShutdownHandle;
use crate::trace::{ConnInfo, TraceLayer, Tracing};

/// The proxy's shared runtime state: settings, upstream pools, own addresses.
#[derive(Debug)]
pub struct Proxy {
    pool: Arc<Pool>,
    own: OwnAddrs,
    inbound_target: Option<Target>,
    opaque_ports: Vec<u16>,
    detect_timeout: Duration,
    detect_max_bytes: usize,
    limits: ServerLimits,
    max_connections: usize,
    tracing: Arc<Tracing>,
}

impl Proxy {
    /// Builds the proxy from the settings; `own_addrs` are stitch's listeners (loop guard).
    /// An `--inbound-target` that does not parse is reported by [`crate::app::Stitch::bind`].
    pub fn new(settings: &Settings, own_addrs: Vec<SocketAddr>, tracing: Tracing) -> Self {
        let own = OwnAddrs::new(own_addrs);
        let pool = Pool::new(
            PoolSettings {
                connect_timeout: settings.connect_timeout,
                idle_timeout: settings.upstream_idle_timeout,
            },
            own.clone(),
        );
        Proxy {
            pool,
            own,
            inbound_target: settings
                .inbound_target
                .as_deref()
                .and_then(|t| Target::parse_authority(t, 80)),
            opaque_ports: settings.opaque_ports.clone(),
            detect_timeout: settings.detect_timeout,
            detect_max_bytes: settings.max_header_bytes,
            limits: ServerLimits {
                header_read_timeout: settings.header_read_timeout,
                max_header_bytes: settings.max_header_bytes,
                max_headers: settings.max_headers,
                h2_max_concurrent_streams: settings.h2_max_concurrent_streams,
                h2_idle_timeout: settings.h2_idle_timeout,
            },
            max_connections: settings.max_connections,
            tracing: Arc::new(tracing),
        }
    }

    /// Accepts connections on `listener` until shutdown; each is served on its own task
    /// (tracked, so shutdown can wait for it). A sidecar never stops accepting on errors:
    /// they are logged and the loop backs off briefly (e.g. out of file descriptors).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        direction: Direction,
        shutdown: ShutdownHandle,
    ) {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        loop {
            // Waiting for a permit first leaves excess connections in the kernel backlog.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = shutdown.triggered() => return,
            };
            let (stream, client) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(%direction, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.triggered() => return,
            };
            let this = self.clone();
            let conn_shutdown = shutdown.clone();
            shutdown.spawn(async move {
                this.handle(stream, client, direction, conn_shutdown).await;
                drop(permit);
            });
        }
    }

    async fn handle(
        &self,
        mut stream: TcpStream,
        client: SocketAddr,
        direction: Direction,
        shutdown: ShutdownHandle,
    ) {
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let metrics = &self.tracing.metrics;
        let _open = metrics.connection_opened(direction);

        let original = orig_dst::original_dst(&stream, local);
        if self
            .pool
            .own_connections()
            .is_own(client, original.unwrap_or(local))
        {
            tracing::error!(%direction, %client, "stitch's own upstream connection was redirected back to it; is stitch running as the --proxy-uid given to `stitch iptables`? closing it");
            return;
        }
        let destination = match (direction, &self.inbound_target, original) {
            (Direction::Inbound, Some(target), _) => Destination::Fixed(target.clone()),
            (_, _, Some(dst)) if self.own.is_self(dst) => {
                tracing::warn!(%direction, %client, %dst, "refused a connection addressed to stitch itself (forwarding loop)");
                return;
            }
            (_, _, Some(dst)) => Destination::Fixed(Target::Addr(dst)),
            (Direction::Outbound, _, None) => Destination::PerRequest,
            (Direction::Inbound, None, None) => {
                tracing::warn!(%client, %local, "inbound connection has no original destination and no --inbound-target; closing it");
                return;
            }
        };
        let declared_opaque = match &destination {
            Destination::Fixed(t) => self.opaque_ports.contains(&t.port()),
            Destination::PerRequest => false,
        };
        let detect_started = std::time::Instant::now();
        let (protocol, prefix) = if declared_opaque {
            metrics.detected("skipped", detect_started.elapsed());
            (Protocol::Opaque, bytes::BytesMut::new())
        } else {
            match detect::detect(&mut stream, self.detect_timeout, self.detect_max_bytes).await {
                Ok(found) => {
                    metrics.detected(found.0.as_str(), detect_started.elapsed());
                    found
                }
                Err(e) => {
                    metrics.detected("error", detect_started.elapsed());
                    return tracing::debug!(%direction, %client, error = %e, "connection failed during detection");
                }
            }
        };
        tracing::trace!(%direction, %client, protocol = protocol.as_str(), "detected");
        match protocol {
            Protocol::Opaque => {
                let Destination::Fixed(target) = destination else {
                    tracing::debug!(%client, "non-HTTP connection to the explicit outbound proxy has no destination; closing it");
                    return;
                };
                let upstream = match self.pool.connect_tcp(&target).await {
                    Ok(u) => u,
                    Err(e) => {
                        return tracing::debug!(%direction, %target, error = %e, "opaque upstream connect failed");
                    }
                };
                metrics.opaque_connection(direction);
                match opaque::relay(stream, prefix, upstream).await {
                    Ok((sent, received)) => metrics.bytes_transferred(direction, sent, received),
                    Err(e) => {
                        tracing::debug!(%direction, %target, error = %e, "opaque connection ended with an error")
                    }
                }
            }
            Protocol::Http1 | Protocol::Http2 => {
                let counts = Arc::new(counting::ByteCounts::default());
                let io = counting::CountingIo::new(
                    detect::PrefixedIo::new(prefix, stream),
                    counts.clone(),
                );
                let http2 = protocol == Protocol::Http2;
                let trace = TraceLayer::new(
                    self.tracing.clone(),
                    ConnInfo {
                        direction,
                        client,
                        destination_port: match &destination {
                            Destination::Fixed(t) => Some(t.port()),
                            Destination::PerRequest => None,
                        },
                        http2,
                    },
                );
                let forward = Forward::new(self.pool.clone(), destination, protocol);
                if http2 {
                    http::server::serve_http2(io, &counts, trace, forward, &self.limits, shutdown)
                        .await;
                } else {
                    http::server::serve_http1(io, trace, forward, &self.limits, shutdown).await;
                }
                let (read, written) = counts.get();
                // The detection prefix was read before counting started; it is replayed through
                // the counter, so every client byte is counted exactly once.
                metrics.bytes_transferred(direction, read, written);
            }
        }
    }
}
