//! The four demo services, each as legacy as the ones in a real order chain: they only pass
//! along the one trace header their SDK knows (or none at all), and know nothing of stitch
//! except its outbound listener, which they use as their HTTP proxy.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Errors of the demo's own HTTP calls; shown to the user, never retried.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A service of the order chain and the trace dialect its (pretend) SDK speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// Entry point; speaks W3C `traceparent`/`tracestate` only.
    Gateway,
    /// Speaks only the in-house `jd-trace-id` template header, and drops the context on its
    /// call to payment (a worker started without the request's context).
    Order,
    /// Speaks B3 only.
    Inventory,
    /// Speaks W3C only.
    Payment,
}

impl Service {
    /// All of them, in the order the chain runs.
    pub(crate) const ALL: [Service; 4] = [
        Service::Gateway,
        Service::Order,
        Service::Inventory,
        Service::Payment,
    ];

    /// `service.name` of its stitch's spans.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Order => "order",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
        }
    }

    /// The headers its SDK reads and writes.
    fn headers(self) -> &'static [&'static str] {
        match self {
            Service::Gateway | Service::Payment => &["traceparent", "tracestate"],
            Service::Order => &["jd-trace-id"],
            Service::Inventory => &["b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"],
        }
    }

    /// The rules file its stitch runs with: what its app understands, inbound and outbound.
    pub(crate) fn rules(self) -> &'static str {
        match self {
            Service::Gateway | Service::Payment => {
                "\
# The app speaks W3C only.
extract: [w3c, b3, jaeger, jd]
inject: [w3c]
formats:
  jd:
    headers:
      jd-trace-id: \"t-{trace_id}-{span_id}-{flags}\"
"
            }
            Service::Order => {
                "\
# The app speaks only the legacy jd-trace-id header; peers get W3C as well.
extract: [w3c, b3, jaeger, jd]
inject: [jd]
formats:
  jd:
    headers:
      jd-trace-id: \"t-{trace_id}-{span_id}-{flags}\"
rules:
  - match: { direction: outbound }
    inject: [w3c, jd]
# The app loses the context on its payment call: link it to the one order in flight.
orphans: infer_single_inflight
"
            }
            Service::Inventory => {
                "\
# The app speaks B3 only.
extract: [w3c, b3, jaeger, jd]
inject: [b3]
formats:
  jd:
    headers:
      jd-trace-id: \"t-{trace_id}-{span_id}-{flags}\"
"
            }
        }
    }
}

/// Where one service and its stitch listen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addrs {
    /// The app itself.
    pub(crate) app: SocketAddr,
    /// Its stitch's inbound listener: what callers use as the service's address.
    pub(crate) inbound: SocketAddr,
    /// Its stitch's outbound listener: the app's HTTP proxy.
    pub(crate) outbound: SocketAddr,
    /// Its stitch's admin server.
    pub(crate) admin: SocketAddr,
}

/// Where every service's stitch listens, so apps can call each other through them (the
/// demo uses fixed ports so its printout is stable; the browser test binds port 0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    addrs: [Addrs; 4],
}

impl Ports {
    /// Four ports per service from `base`: app, stitch inbound, stitch outbound, stitch admin.
    pub(crate) fn new(base: u16) -> Self {
        let at = |index: u16, offset: u16| {
            SocketAddr::from(([127, 0, 0, 1], base + 10 * index + offset))
        };
        Ports::from_addrs([0, 1, 2, 3].map(|i| Addrs {
            app: at(i, 0),
            inbound: at(i, 1),
            outbound: at(i, 2),
            admin: at(i, 3),
        }))
    }

    /// Explicit addresses, in the order of [`Service::ALL`].
    pub(crate) fn from_addrs(addrs: [Addrs; 4]) -> Self {
        Ports { addrs }
    }

    fn of(self, service: Service) -> Addrs {
        let index = Service::ALL
            .iter()
            .position(|s| *s == service)
            .expect("every service is in ALL");
        self.addrs[index]
    }

    /// The app itself.
    pub(crate) fn app(self, s: Service) -> SocketAddr {
        self.of(s).app
    }

    /// Its stitch's inbound listener: what callers use as the service's address.
    pub(crate) fn inbound(self, s: Service) -> SocketAddr {
        self.of(s).inbound
    }

    /// Its stitch's outbound listener: the app's HTTP proxy.
    pub(crate) fn outbound(self, s: Service) -> SocketAddr {
        self.of(s).outbound
    }

    /// Its stitch's admin server.
    pub(crate) fn admin(self, s: Service) -> SocketAddr {
        self.of(s).admin
    }
}

/// Serves `service` on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, service: Service, ports: Ports) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let handler = service_fn(move |req| handle(service, ports, req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

async fn handle(
    service: Service,
    ports: Ports,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut report = format!(
        "{:<9} saw {}\n",
        service.name(),
        seen(service, req.headers())
    );
    let ours = forwardable(service, req.headers());
    let calls: &[(Service, &str, bool)] = match service {
        Service::Gateway => &[(Service::Order, "/orders", true)],
        // The payment call carries no context at all: the seam stitch has to repair.
        Service::Order => &[
            (Service::Inventory, "/reserve", true),
            (Service::Payment, "/charge", false),
        ],
        Service::Inventory | Service::Payment => &[],
    };
    let mut status = StatusCode::OK;
    for &(callee, path, with_context) in calls {
        let uri = format!("http://{}{path}", ports.inbound(callee));
        let headers = if with_context {
            ours.clone()
        } else {
            HeaderMap::new()
        };
        match get(ports.outbound(service), &uri, headers).await {
            Ok((code, body)) => {
                if !code.is_success() {
                    status = StatusCode::BAD_GATEWAY;
                }
                report.push_str(&body);
            }
            Err(e) => {
                status = StatusCode::BAD_GATEWAY;
                report.push_str(&format!("{:<9} call failed: {e}\n", callee.name()));
            }
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(report)));
    *response.status_mut() = status;
    Ok(response)
}

/// The trace headers this service's SDK found, as one line.
fn seen(service: Service, headers: &HeaderMap) -> String {
    let found: Vec<String> = service
        .headers()
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(format!("{name}: {value}"))
        })
        .collect();
    if found.is_empty() {
        format!("no {} header", service.headers()[0])
    } else {
        found.join(", ")
    }
}

/// What its SDK carries to its own outgoing calls: only its own dialect.
fn forwardable(service: Service, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in service.headers() {
        if let Some(value) = headers.get(*name) {
            out.insert(*name, value.clone());
        }
    }
    out
}

/// `GET uri` sent to `via` (a stitch listener, or any HTTP server); absolute-form `uri` makes
/// it a proxy request. Returns the status and body.
pub(crate) async fn get(
    via: SocketAddr,
    uri: &str,
    headers: HeaderMap,
) -> Result<(StatusCode, String), BoxError> {
    let stream = TcpStream::connect(via).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let parsed: http::Uri = uri.parse()?;
    let host = parsed
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| via.to_string());
    let mut request = Request::get(parsed).body(Full::new(Bytes::new()))?;
    *request.headers_mut() = headers;
    request
        .headers_mut()
        .insert(http::header::HOST, HeaderValue::from_str(&host)?);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
