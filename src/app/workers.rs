//! The proxy workers: N OS threads, each running a current-thread tokio runtime with its own
//! [`Proxy`] (so its own upstream pool) and owning its connections from accept to close.
//!
//! Every worker accepts on every listener (a dup of the bound socket, registered in its own
//! runtime) and hands a connection to a less busy worker when it holds clearly more
//! (`proxy::placement`). A request never leaves its worker: no work stealing, no wake-up of
//! another thread on the request path. Shared state is read-mostly (the `ArcSwap` rules,
//! the metrics' atomics) or the span sink's own.
//!
//! Shutdown is the process's one [`ShutdownHandle`]: its signal stops every worker's accept
//! loops and drains their connections, and its tracker counts tasks on every worker, so one
//! drain waits for all. When the drain is over — done or past its deadline — [`Workers::stop`]
//! ends each worker's runtime, which closes whatever is still open there.

use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::direction::Direction;
use crate::proxy::cap::ConnectionCap;
use crate::proxy::placement::{Handoff, Seat, Team};
use crate::proxy::{Proxy, ProxyConfig, ProxyHandles};
use crate::shutdown::ShutdownHandle;

/// A bound proxy listener, ready to be shared by the workers.
#[derive(Debug)]
pub(crate) struct SharedListener {
    /// The bound socket (non-blocking); each worker registers a dup of it.
    pub listener: std::net::TcpListener,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The listener's connection cap, shared by every worker.
    pub cap: Arc<ConnectionCap>,
}

/// The running workers. Dropping it stops them (their runtimes end, closing what they hold),
/// so a `Stitch::run` future dropped mid-way leaves no thread behind.
#[derive(Debug)]
pub(crate) struct Workers {
    stop: CancellationToken,
    stopped: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts `count` workers serving `listeners` (`handoff` off: each keeps what it
    /// accepts); returns once every worker is accepting.
    pub(crate) async fn start(
        count: NonZeroUsize,
        config: &ProxyConfig,
        handles: &ProxyHandles,
        handoff: bool,
        listeners: Vec<SharedListener>,
        shutdown: &ShutdownHandle,
    ) -> io::Result<Workers> {
        let (team, queues) = Team::new(count.get(), handoff, &handles.trace.metrics);
        let mut workers = Workers {
            stop: CancellationToken::new(),
            stopped: Vec::with_capacity(count.get()),
        };
        let mut started = Vec::with_capacity(count.get());
        for (index, queue) in queues.into_iter().enumerate() {
            let mut own = Vec::with_capacity(listeners.len());
            for l in &listeners {
                own.push((l.listener.try_clone()?, l.direction, l.cap.clone()));
            }
            let worker = Worker {
                seat: team.seat(index),
                config: config.clone(),
                handles: handles.clone(),
                listeners: own,
                queue,
                shutdown: shutdown.clone(),
                stop: workers.stop.clone(),
            };
            let (started_tx, started_rx) = oneshot::channel();
            let (stopped_tx, stopped_rx) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("stitch-worker-{index}"))
                .spawn(move || worker.run(started_tx, stopped_tx))?;
            workers.stopped.push(stopped_rx);
            started.push(started_rx);
        }
        // The workers hold their dups; the listening sockets close when the last one stops.
        drop(listeners);
        for rx in started {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a proxy worker died while starting")),
            }
        }
        Ok(workers)
    }

    /// Ends every worker's runtime (closing the connections still open on it) and waits until
    /// each has; their spans are recorded by then.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        for stopped in std::mem::take(&mut self.stopped) {
            let _ = stopped.await;
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What one worker thread is given.
struct Worker {
    seat: Seat,
    config: ProxyConfig,
    handles: ProxyHandles,
    listeners: Vec<(std::net::TcpListener, Direction, Arc<ConnectionCap>)>,
    queue: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
    shutdown: ShutdownHandle,
    stop: CancellationToken,
}

impl Worker {
    /// The worker thread: its runtime serves until told to stop, then is dropped with every
    /// task still on it.
    fn run(self, started: oneshot::Sender<io::Result<()>>, stopped: oneshot::Sender<()>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let Worker {
            seat,
            config,
            handles,
            listeners,
            queue,
            shutdown,
            stop,
        } = self;
        runtime.block_on(async move {
            // Built here: the pool's idle reaper runs on this worker's runtime.
            let proxy = Arc::new(Proxy::new(config, handles));
            for (listener, direction, cap) in listeners {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                shutdown.spawn(proxy.clone().serve(
                    listener,
                    direction,
                    cap,
                    seat.clone(),
                    shutdown.clone(),
                ));
            }
            shutdown.spawn(proxy.clone().serve_parked(shutdown.clone()));
            shutdown.spawn(proxy.serve_handoffs(queue, shutdown.clone()));
            let _ = started.send(Ok(()));
            stop.cancelled().await;
        });
        drop(runtime);
        let _ = stopped.send(());
    }
}
