//! The client-facing HTTP/1 connection driver: reads request heads with the codec, hands each
//! request to the service with its body streaming from the socket, writes the response, and
//! decides whether the connection carries another request.
//!
//! What a connection holds between requests is its stream, split in two, and nothing else:
//! the read buffer is released when a read finds nothing ([`ReadSide`]), the write buffer
//! lives for one response. Timeouts: the first head must be complete by the deadline the
//! caller passes (`--header-read-timeout` from accept: detection's wait counts); a keep-alive
//! connection then waits up to `--idle-timeout` for the first byte of its next head, which has
//! `--header-read-timeout` from that byte (from the end of the previous response when the
//! client had already sent it: pipelining). An idle connection also closes at once on
//! shutdown, and — when idle for at least [`IDLE_ENOUGH`] — when a client waits at the
//! connection cap ([`crate::proxy::cap`]). A busy one finishes its exchange and closes
//! (`Connection: close` on the response), or is closed at the drain's deadline.
//!
//! A connection idle for [`ServerSettings::park_after`] is given back to the caller whole
//! ([`Parking`]): the caller parks it outside the runtime ([`crate::proxy::park`]) so that an
//! idle connection costs no task at all, and serves it again when its client sends.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::Service;

use super::chunked::ChunkedDecoder;
use super::error::{BoxError, Error};
use super::ext::{OnUpgrade, Upgraded};
use super::framing::{BodyFraming, connection_tokens, expects_continue, keep_alive, request_body};
use super::head::{HeadError, HeadLimits, RequestHead, parse_request};
use super::incoming::{Delimited, HeadRead, Incoming, ReadSide, Returned};
use super::response::{Answering, CONTINUE, ResponseWriter, WriteBody, write_refusal};
use crate::proxy::cap::IDLE_ENOUGH;
use crate::proxy::http::server::{MAX_IDLE_TIMEOUT, ServerLimits};
use crate::proxy::lease::ConnectionLease;
use crate::shutdown::ShutdownHandle;
use crate::telemetry::Metrics;

/// The driver's settings, derived once from the server limits and shared by every connection
/// of a listener.
#[derive(Debug, Clone)]
pub(crate) struct ServerSettings {
    /// Bounds of a request head (and of a chunked body's trailers).
    pub(crate) limits: HeadLimits,
    /// How long a head may take from its first byte.
    pub(crate) header_read_timeout: Duration,
    /// How long a keep-alive connection waits for the first byte of its next request.
    pub(crate) idle_timeout: Duration,
    /// A keep-alive connection idle this long is handed back to the caller to park
    /// ([`Parking`]); `None`: never (also when it would not come before `idle_timeout`).
    pub(crate) park_after: Option<Duration>,
    /// Where the framing refusals stitch counts (`stitch_requests_rejected_total`) go.
    pub(crate) refusals: Option<Metrics>,
    /// Tests: told each time a connection starts waiting idle, with its read buffer's size.
    #[cfg(test)]
    pub(crate) idle_probe: Option<Arc<IdleProbe>>,
}

impl ServerSettings {
    /// These settings, handing idle connections back to be parked after `after` idle — when
    /// that comes before the idle timeout.
    pub(crate) fn parking_after(mut self, after: Duration) -> Self {
        self.park_after = (after < self.idle_timeout).then_some(after);
        self
    }

    /// These settings, counting framing refusals in `metrics`.
    pub(crate) fn counting_refusals(mut self, metrics: Metrics) -> Self {
        self.refusals = Some(metrics);
        self
    }

    /// The settings for `limits` (timeouts capped so deadlines never overflow an `Instant`).
    pub(crate) fn new(limits: &ServerLimits) -> Self {
        ServerSettings {
            limits: HeadLimits {
                max_head_bytes: limits.max_header_bytes,
                max_headers: limits.max_headers,
            },
            header_read_timeout: limits.header_read_timeout.min(MAX_IDLE_TIMEOUT),
            idle_timeout: limits.idle_timeout.min(MAX_IDLE_TIMEOUT),
            park_after: None,
            refusals: None,
            #[cfg(test)]
            idle_probe: None,
        }
    }
}

/// Tests: what a connection holds while it waits idle (see [`ServerSettings::idle_probe`]).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct IdleProbe {
    /// The read buffer's capacity at the last idle wait.
    pub(crate) read_capacity: std::sync::atomic::AtomicUsize,
    /// Notified (one permit) at each idle wait.
    pub(crate) parked: tokio::sync::Notify,
}

/// An idle keep-alive connection handed back by [`serve`] to be parked: its stream whole again
/// (nothing of the next request has arrived: nothing is buffered), and its idle clock.
#[derive(Debug)]
pub(crate) struct Parking<I> {
    /// The client connection.
    pub(crate) io: I,
    pub(crate) idle: IdleClock,
}

/// When a keep-alive connection began waiting for its next request, and when `--idle-timeout`
/// closes it if no byte of one arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleClock {
    /// When it started waiting.
    pub(crate) since: Instant,
    /// When the idle timeout closes it.
    pub(crate) deadline: Instant,
}

/// Serves HTTP/1 on `io` until the client leaves, a timeout or shutdown ends the connection,
/// it is handed back to be parked (`Some`, see [`ServerSettings::park_after`]), or a request
/// is refused (`Err`, after the refusal was written: [`Error::rejection`] names what to
/// count). `prefix` is what protocol detection already read (the wiring counts it in
/// the lease: it bypassed the counting stream); `first_head_deadline` is when the first head
/// must be complete (from accept). `lease` lets a client waiting at the cap close the
/// connection while idle. After a `101` (or a 2xx to `CONNECT`) the connection goes to the
/// request's [`OnUpgrade`] and this returns.
///
/// Not an `async fn`: the stream is split and the connection's state built before the
/// future exists, so the future holds them once (an `async fn` keeps its arguments beside
/// what it makes of them) — it is part of every connection task, busy or idle.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve<'a, I, S, B>(
    io: I,
    prefix: Bytes,
    mut service: S,
    settings: &'a ServerSettings,
    shutdown: &'a ShutdownHandle,
    lease: Option<&'a Arc<ConnectionLease>>,
    first_head_deadline: Instant,
) -> impl Future<Output = Result<Option<Parking<I>>, Error>> + 'a
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + 'a,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (read, write) = tokio::io::split(io);
    let mut conn = Conn {
        read: Some(ReadSide::new(Box::new(read), BytesMut::from(prefix))),
        write,
        settings,
        shutdown,
        lease,
    };
    async move {
        let ended = tokio::select! {
            result = conn.run(&mut service, first_head_deadline) => result?,
            () = shutdown.deadline_passed() => {
                tracing::debug!("closing a busy HTTP/1 client connection at the drain deadline");
                return Ok(None);
            }
        };
        match ended {
            Ended::Closed => Ok(None),
            Ended::Upgrade((tx, read)) => {
                let ReadSide { io, buf } = read;
                let _ = tx.send(Upgraded::new(io, Box::new(conn.write), buf.freeze()));
                Ok(None)
            }
            Ended::Park(idle) => Ok(conn.reunite().map(|io| Parking { io, idle })),
        }
    }
}

/// How [`Conn::run`] left the connection.
enum Ended {
    /// Closed (or the client left).
    Closed,
    /// Handed over after a protocol switch.
    Upgrade(HandOver),
    /// Idle for [`ServerSettings::park_after`]: to be parked.
    Park(IdleClock),
}

/// What the idle wait decided.
enum Idle {
    /// Bytes of the next request arrived.
    Request,
    /// Close the connection.
    Close,
    /// Hand it back to be parked.
    Park(IdleClock),
}

/// The connection's new owner after a protocol switch, and the read side to give it.
type HandOver = (oneshot::Sender<Upgraded>, ReadSide);

/// One connection's state between the steps of [`serve`].
struct Conn<'a, I> {
    /// The read side, while the driver has it (a request body holds it meanwhile).
    read: Option<ReadSide>,
    write: WriteHalf<I>,
    settings: &'a ServerSettings,
    shutdown: &'a ShutdownHandle,
    lease: Option<&'a Arc<ConnectionLease>>,
}

/// A request built from its head, and what its exchange needs to finish it.
struct Prepared {
    request: Request<Incoming>,
    answering: Answering,
    /// Where the connection goes if the request switches protocols.
    upgrade_tx: Option<oneshot::Sender<Upgraded>>,
    /// Receives the read side back from the request body.
    body_done: Option<oneshot::Receiver<Returned>>,
    /// Told when the body is first read (`Expect: 100-continue`).
    continue_rx: Option<oneshot::Receiver<()>>,
}

/// What writing a response decided for the connection.
struct Respond {
    /// It may carry another request.
    keep: bool,
    /// It is handed over after the response (a `101`, or a 2xx to `CONNECT`).
    upgrading: bool,
    /// A `101` the client did not ask for: HTTP/1 ends here.
    unasked_switch: bool,
}

/// How an exchange left the connection.
enum Next {
    /// Read the next request; `Some` deadline when bytes of its head are already buffered.
    Request(Option<Instant>),
    /// Close.
    Close,
    /// Hand the connection over (see [`HandOver`]).
    Upgrade(HandOver),
}

impl<I> Conn<'_, I>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    /// Serves requests until the connection closes, is handed over, or idles long enough to be
    /// parked.
    async fn run<S, B>(&mut self, service: &mut S, first: Instant) -> Result<Ended, Error>
    where
        S: Service<Request<Incoming>, Response = Response<B>>,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut next_deadline = Some(first);
        loop {
            let deadline = match next_deadline.take() {
                Some(at) => at,
                None => match self.wait_idle().await? {
                    Idle::Request => Instant::now() + self.settings.header_read_timeout,
                    Idle::Close => {
                        self.close().await;
                        return Ok(Ended::Closed);
                    }
                    Idle::Park(idle) => return Ok(Ended::Park(idle)),
                },
            };
            let head = match tokio::time::timeout_at(deadline, self.read_head()).await {
                Err(_) => return Err(Error::HeaderTimeout),
                Ok(Ok(Some(head))) => head,
                Ok(Ok(None)) => return Ok(Ended::Closed),
                Ok(Err(e)) => {
                    let _ = write_refusal(&mut self.write, e.status()).await;
                    return Err(Error::Head(e));
                }
            };
            let prepared = match self.prepare(head) {
                Ok(prepared) => prepared,
                Err(e @ Error::Framing(_)) => {
                    let _ = write_refusal(&mut self.write, http::StatusCode::BAD_REQUEST).await;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            match self.exchange(service, prepared).await? {
                Next::Request(at) => next_deadline = at,
                Next::Close => {
                    self.close().await;
                    return Ok(Ended::Closed);
                }
                Next::Upgrade(hand_over) => return Ok(Ended::Upgrade(hand_over)),
            }
        }
    }

    /// Ends the connection from this side: the client sees the end of a close-delimited body.
    async fn close(&mut self) {
        let _ = self.write.shutdown().await;
    }

    /// Waits for the first byte of the next request, unless the connection should close (the
    /// client left, idle timeout, shutdown, a client at the cap) or be parked.
    async fn wait_idle(&mut self) -> Result<Idle, Error> {
        let read = self.read.as_mut().ok_or(Error::Gone)?;
        let arrived = |n: usize| if n > 0 { Idle::Request } else { Idle::Close };
        // A next request that is already there is read without arming anything.
        match poll_fn(|cx| Poll::Ready(read.poll_fill(cx))).await {
            Poll::Ready(Ok(n)) => return Ok(arrived(n)),
            Poll::Ready(Err(e)) => return Err(Error::Io(e)),
            Poll::Pending => {}
        }
        #[cfg(test)]
        if let Some(probe) = &self.settings.idle_probe {
            probe
                .read_capacity
                .store(read.buf.capacity(), std::sync::atomic::Ordering::SeqCst);
            probe.parked.notify_one();
        }
        let now = Instant::now();
        let idle_deadline = now + self.settings.idle_timeout;
        let park_at = self.settings.park_after.map(|after| now + after);
        let room = room_wanted(self.lease, now + IDLE_ENOUGH);
        // One timer: the idle timeout, or parking before it.
        tokio::select! {
            biased;
            () = self.shutdown.triggered() => Ok(Idle::Close),
            filled = read.fill() => match filled {
                Ok(n) => Ok(arrived(n)),
                Err(e) => Err(Error::Io(e)),
            },
            () = tokio::time::sleep_until(park_at.unwrap_or(idle_deadline)) => {
                if park_at.is_some() {
                    return Ok(Idle::Park(IdleClock { since: now, deadline: idle_deadline }));
                }
                tracing::debug!("closing an idle HTTP/1 keep-alive client connection");
                Ok(Idle::Close)
            }
            () = room => {
                tracing::debug!(
                    "closing an idle HTTP/1 keep-alive client connection: a client waits at the connection cap"
                );
                Ok(Idle::Close)
            }
        }
    }

    /// The stream whole again, for parking: the read half (back from its box) rejoins the
    /// write half. `None` (the connection is dropped, i.e. closed) only if the read side is
    /// not the one [`serve`] split off, which never happens.
    fn reunite(self) -> Option<I> {
        let read = self.read?;
        debug_assert!(
            read.buf.is_empty(),
            "parked with bytes of a request buffered"
        );
        let read: Box<dyn std::any::Any> = read.io;
        let read = read.downcast::<ReadHalf<I>>().ok()?;
        Some(read.unsplit(self.write))
    }

    /// Reads until a complete head is buffered and parses it (only after a read that brought a
    /// `\n`: a head trickled byte by byte costs linear time). `None` when the client closed.
    async fn read_head(&mut self) -> Result<Option<RequestHead>, HeadError> {
        let limits = self.settings.limits;
        let Some(read) = self.read.as_mut() else {
            return Ok(None);
        };
        match read.read_head(&limits, parse_request).await {
            Ok(head) => Ok(Some(head)),
            Err(HeadRead::Closed | HeadRead::Io(_)) => Ok(None),
            Err(HeadRead::Invalid(e)) => Err(e),
        }
    }

    /// Frames the request `head` announces and builds it for the service, its body streaming
    /// from the connection; [`Error::Framing`] (counted) when its framing is refused (the
    /// caller answers `400`). Not `async`:
    /// what it builds is moved into the exchange, so the head and the request are not each
    /// kept in the connection's state while the service answers.
    fn prepare(&mut self, head: RequestHead) -> Result<Prepared, Error> {
        let framing = request_body(&head).map_err(|e| {
            // Counted before the answer leaves: a client that reads the metrics after its
            // `400` finds its refusal there.
            if let (Some(metrics), Some(why)) = (&self.settings.refusals, e.rejection()) {
                metrics.request_rejected(why.as_str());
            }
            Error::Framing(e)
        })?;
        let answering = Answering {
            head: head.method == Method::HEAD,
            connect: head.method == Method::CONNECT,
            version: head.version,
            client_keep_alive: keep_alive(head.version, &head.headers),
        };
        let (upgrade_tx, on_upgrade) = if answering.connect || wants_upgrade(&head.headers) {
            let (tx, on) = OnUpgrade::pair();
            (Some(tx), Some(on))
        } else {
            (None, None)
        };
        let mut body_done = None;
        let mut continue_rx = None;
        let body = match framing {
            // `request_body` never answers `CloseDelimited` (a request cannot be delimited by
            // the close); were it to, reading nothing is the safe reading.
            BodyFraming::Empty | BodyFraming::CloseDelimited => Incoming::empty(),
            BodyFraming::Length(_) | BodyFraming::Chunked => {
                let read = self.read.take().ok_or(Error::Gone)?;
                let delimited = match framing {
                    BodyFraming::Length(n) => Delimited::Length(n),
                    _ => Delimited::Chunked(ChunkedDecoder::new(self.settings.limits)),
                };
                let (done_tx, done_rx) = oneshot::channel();
                body_done = Some(done_rx);
                let continue_tx = expects_continue(&head).then(|| {
                    let (tx, rx) = oneshot::channel();
                    continue_rx = Some(rx);
                    tx
                });
                Incoming::new(read, delimited, done_tx, continue_tx)
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = head.method;
        *request.uri_mut() = head.uri;
        *request.version_mut() = head.version;
        *request.headers_mut() = head.headers;
        if head.case.is_needed() {
            request.extensions_mut().insert(head.case);
        }
        if let Some(on) = on_upgrade {
            request.extensions_mut().insert(on);
        }
        Ok(Prepared {
            request,
            answering,
            upgrade_tx,
            body_done,
            continue_rx,
        })
    }

    /// Serves one prepared request: the service, the response; then where the connection
    /// goes next.
    async fn exchange<S, B>(&mut self, service: &mut S, prepared: Prepared) -> Result<Next, Error>
    where
        S: Service<Request<Incoming>, Response = Response<B>>,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let Prepared {
            request,
            answering,
            upgrade_tx,
            mut body_done,
            continue_rx,
        } = prepared;
        poll_fn(|cx| service.poll_ready(cx).map_err(|e| Error::Service(e.into()))).await?;
        let response = self
            .answer(service.call(request), continue_rx, &mut body_done)
            .await?;
        let upgrade_asked = upgrade_tx.is_some();
        let (writing, respond) = self.respond(response, answering, upgrade_asked, &body_done);
        writing.await?;
        if respond.unasked_switch {
            return Ok(Next::Close);
        }

        if let Some(done) = body_done {
            // The service may still be reading the body (streaming it upstream after the
            // response came back); the connection waits for it, but no longer than an idle
            // connection would wait for its client.
            let Ok(returned) = tokio::time::timeout(self.settings.idle_timeout, done).await else {
                return Ok(Next::Close);
            };
            if !self.take_back(returned) {
                return Ok(Next::Close);
            }
        } else if self.read.is_none() {
            // The body came back unfinished while the service was answering.
            return Ok(Next::Close);
        }
        if respond.upgrading
            && let (Some(tx), Some(read)) = (upgrade_tx, self.read.take())
        {
            return Ok(Next::Upgrade((tx, read)));
        }
        if !respond.keep {
            return Ok(Next::Close);
        }
        let buffered = self.read.as_ref().is_some_and(|r| !r.buf.is_empty());
        Ok(Next::Request(buffered.then(|| {
            Instant::now() + self.settings.header_read_timeout
        })))
    }

    /// Decides what `response` does to the connection and starts writing it. Not `async`:
    /// the response is moved into its writer, which holds only the body.
    fn respond<B>(
        &mut self,
        response: Response<B>,
        answering: Answering,
        upgrade_asked: bool,
        body_done: &Option<oneshot::Receiver<Returned>>,
    ) -> (WriteBody<'_, WriteHalf<I>, B>, Respond)
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let status = response.status();
        let upgrading = upgrade_asked
            && if answering.connect {
                status.is_success()
            } else {
                status == http::StatusCode::SWITCHING_PROTOCOLS
            };
        // A body that came back unfinished while the service answered leaves the connection
        // unusable: the response says so (`Connection: close`).
        let body_usable = body_done.is_some() || self.read.is_some();
        let keep = answering.client_keep_alive && !triggered(self.shutdown) && body_usable;
        // A `101` the client did not ask for ends HTTP/1 on this connection either way.
        let unasked_switch = status == http::StatusCode::SWITCHING_PROTOCOLS && !upgrading;
        let (writing, keep) =
            ResponseWriter::new(&mut self.write, answering).start(response, keep || upgrading);
        let respond = Respond {
            keep,
            upgrading,
            unasked_switch,
        };
        (writing, respond)
    }

    /// Puts back the read side a body hands back when it was read to its end (`true`: the
    /// connection may carry another request); an unfinished body's read side is dropped, as
    /// where the next request would start is unknown (the connection closes after the
    /// response).
    fn take_back(&mut self, returned: Result<Returned, oneshot::error::RecvError>) -> bool {
        match returned {
            Ok(Returned {
                read,
                complete: true,
                ..
            }) => {
                self.read = Some(read);
                true
            }
            _ => false,
        }
    }

    /// Takes what a request body hands back while its response is awaited: the client's close
    /// before the body's end is [`Error::ClientClosed`] (the exchange is abandoned);
    /// otherwise the read side goes back ([`Self::take_back`]) and `true` says it is worth
    /// watching (an unfinished body closes the connection after the response).
    fn body_returned(
        &mut self,
        returned: Result<Returned, oneshot::error::RecvError>,
    ) -> Result<bool, Error> {
        if matches!(&returned, Ok(r) if r.closed) {
            return Err(Error::ClientClosed);
        }
        Ok(self.take_back(returned))
    }

    /// Waits for the service's response, writing `100 Continue` when the body is first read.
    /// Meanwhile it watches the connection (once the body, if any, has handed the read side
    /// back): a client that closes it abandons the exchange ([`Error::ClientClosed`]). So does
    /// a client that closed it before its request body's end: the service's answer to the
    /// broken body (the forwarder's `400`) is dropped unwritten.
    async fn answer<F, R, E>(
        &mut self,
        call: F,
        mut continue_rx: Option<oneshot::Receiver<()>>,
        body_done: &mut Option<oneshot::Receiver<Returned>>,
    ) -> Result<R, Error>
    where
        F: Future<Output = Result<R, E>>,
        E: Into<BoxError>,
    {
        let mut call = pin!(call);
        // Pipelined bytes beyond this are left unread until the response is written.
        let limit = self.settings.limits.max_head_bytes;
        let mut watching = self.read.is_some();
        loop {
            // No branch awaits: what a branch decides is done after the `select!`, so its
            // output (which can hold the response) is not kept while `100 Continue` is
            // written, and the service's error, boxed at once, is never held across an await.
            let send_continue = tokio::select! {
                biased;
                wanted = recv_if_some(&mut continue_rx), if continue_rx.is_some() => {
                    continue_rx = None;
                    wanted.is_ok()
                }
                response = call.as_mut() => {
                    // The body may have failed on the client's close within the very poll
                    // that produced this answer to it.
                    if let Some(Ok(returned)) = body_done.as_mut().map(|rx| rx.try_recv()) {
                        *body_done = None;
                        self.body_returned(Ok(returned))?;
                    }
                    return response.map_err(|e| Error::Service(e.into()));
                }
                returned = recv_if_some(body_done), if body_done.is_some() => {
                    *body_done = None;
                    watching = self.body_returned(returned)?;
                    false
                }
                gone = client_closed(self.read.as_mut(), limit), if watching => {
                    if gone {
                        return Err(Error::ClientClosed);
                    }
                    watching = false;
                    false
                }
            };
            if send_continue {
                self.write.write_all(CONTINUE).await?;
                self.write.flush().await?;
            }
        }
    }
}

/// What `rx` receives; never resolves without a receiver (a `select!` branch disabled).
async fn recv_if_some<T>(
    rx: &mut Option<oneshot::Receiver<T>>,
) -> Result<T, oneshot::error::RecvError> {
    match rx.as_mut() {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

/// Reads ahead while a request is served: `true` when the client closed the connection (or
/// it failed) with nothing pipelined behind this request, `false` once `limit` pipelined
/// bytes are buffered or the client half-closed behind pipelined requests (stop watching:
/// they are served, as hyper did). Cancel-safe: what a read brings stays in the buffer.
async fn client_closed(read: Option<&mut ReadSide>, limit: usize) -> bool {
    let Some(read) = read else {
        return false;
    };
    while read.buf.len() < limit {
        match read.fill().await {
            Ok(0) => return read.buf.is_empty(),
            Err(_) => return true,
            Ok(_) => {}
        }
    }
    false
}

/// Whether a request asks to switch protocols (`Upgrade` named in `Connection`, RFC 9110
/// §7.8): only then does it get an [`OnUpgrade`] (a channel allocation).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

/// Whether shutdown was triggered, without waiting: decides `Connection: close` on a
/// response written during a drain.
fn triggered(shutdown: &ShutdownHandle) -> bool {
    let mut triggered = pin!(shutdown.triggered());
    triggered
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

/// Resolves when a client waiting at the connection cap wants this idle connection closed:
/// never before `idle_enough` (a connection between two quick requests is left alone, and
/// registers nothing), and never for a connection without the cap's wake-up.
async fn room_wanted(lease: Option<&Arc<ConnectionLease>>, idle_enough: Instant) {
    let Some(notify) = lease.and_then(|l| l.idle_close()) else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(idle_enough).await;
    notify.notified().await;
}
