//! A real gRPC server (tonic, no protoc: a hand-written service over `tonic::server::Grpc`)
//! and a generic client, for the four call modes, error statuses, trailers and cancellation.
//!
//! Service `stitch.test.Echo`:
//!
//! | method | mode | behaviour |
//! | --- | --- | --- |
//! | `Unary` | unary | echoes `text`, `n + 1` |
//! | `ServerStream` | server streaming | `n` messages `text-0 .. text-(n-1)` |
//! | `ClientStream` | client streaming | texts joined with `,`, `n` = message count |
//! | `Bidi` | bidi | each message echoed as `echo:text` |
//! | `Fail` | unary | [`FAIL_CODE`] with [`FAIL_MESSAGE`] and metadata `x-fail-reason: locked` |
//! | `StreamThenAbort` | server streaming | two messages, then ABORTED with metadata (sent as trailers) |
//! | `Endless` | server streaming | one message, then nothing; dropping the stream is recorded |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The one message type of the test service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// Free text.
    #[prost(string, tag = "1")]
    pub text: String,
    /// A number (count or sequence).
    #[prost(uint32, tag = "2")]
    pub n: u32,
}

/// The code `Fail` returns.
pub const FAIL_CODE: Code = Code::FailedPrecondition;
/// The message `Fail` returns (non-ASCII on purpose: grpc-message is percent-encoded).
pub const FAIL_MESSAGE: &str = "order 42 is locked: ünïcödé, 100% sure";

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

/// Handle to the running gRPC server.
#[derive(Clone)]
pub struct GrpcUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How many `Endless` response streams were dropped (the call ended or was cancelled).
    pub endless_dropped: Arc<AtomicUsize>,
    /// How many `Endless` calls started.
    pub endless_started: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct EchoService {
    up: GrpcUpstream,
}

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "stitch.test.Echo";
}

struct DropSignal(Arc<AtomicUsize>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let up = self.up.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
            let resp = match req.uri().path() {
                "/stitch.test.Echo/Unary" => {
                    grpc.unary(
                        tower::service_fn(|r: Request<Msg>| async move {
                            let m = r.into_inner();
                            Ok::<_, Status>(Response::new(Msg {
                                text: m.text,
                                n: m.n + 1,
                            }))
                        }),
                        req,
                    )
                    .await
                }
                "/stitch.test.Echo/ServerStream" => {
                    grpc.server_streaming(
                        tower::service_fn(|r: Request<Msg>| async move {
                            let m = r.into_inner();
                            let items = (0..m.n).map(move |i| {
                                Ok(Msg {
                                    text: format!("{}-{i}", m.text),
                                    n: i,
                                })
                            });
                            Ok::<_, Status>(Response::new(
                                futures::stream::iter(items).boxed() as MsgStream
                            ))
                        }),
                        req,
                    )
                    .await
                }
                "/stitch.test.Echo/ClientStream" => {
                    grpc.client_streaming(
                        tower::service_fn(|r: Request<Streaming<Msg>>| async move {
                            let mut inbound = r.into_inner();
                            let mut texts = Vec::new();
                            while let Some(m) = inbound.message().await? {
                                texts.push(m.text);
                            }
                            Ok::<_, Status>(Response::new(Msg {
                                n: texts.len() as u32,
                                text: texts.join(","),
                            }))
                        }),
                        req,
                    )
                    .await
                }
                "/stitch.test.Echo/Bidi" => {
                    grpc.streaming(
                        tower::service_fn(|r: Request<Streaming<Msg>>| async move {
                            let out = r.into_inner().map(|m| {
                                m.map(|m| Msg {
                                    text: format!("echo:{}", m.text),
                                    n: m.n,
                                })
                            });
                            Ok::<_, Status>(Response::new(out.boxed() as MsgStream))
                        }),
                        req,
                    )
                    .await
                }
                "/stitch.test.Echo/Fail" => {
                    grpc.unary(
                        tower::service_fn(|_r: Request<Msg>| async move {
                            let mut md = tonic::metadata::MetadataMap::new();
                            md.insert("x-fail-reason", "locked".parse().expect("ascii"));
                            Err::<Response<Msg>, _>(Status::with_metadata(
                                FAIL_CODE,
                                FAIL_MESSAGE,
                                md,
                            ))
                        }),
                        req,
                    )
                    .await
                }
                "/stitch.test.Echo/StreamThenAbort" => {
                    grpc.server_streaming(
                        tower::service_fn(|_r: Request<Msg>| async move {
                            let mut md = tonic::metadata::MetadataMap::new();
                            md.insert("x-abort-reason", "stopped-at-two".parse().expect("ascii"));
                            let items = vec![
                                Ok(Msg {
                                    text: "one".into(),
                                    n: 1,
                                }),
                                Ok(Msg {
                                    text: "two".into(),
                                    n: 2,
                                }),
                                Err(Status::with_metadata(
                                    Code::Aborted,
                                    "aborted after two",
                                    md,
                                )),
                            ];
                            Ok::<_, Status>(Response::new(
                                futures::stream::iter(items).boxed() as MsgStream
                            ))
                        }),
                        req,
                    )
                    .await
                }
                "/stitch.test.Echo/Endless" => {
                    let up = up.clone();
                    grpc.server_streaming(
                        tower::service_fn(move |_r: Request<Msg>| {
                            let up = up.clone();
                            async move {
                                up.endless_started.fetch_add(1, Ordering::SeqCst);
                                let guard = DropSignal(up.endless_dropped.clone());
                                let first = futures::stream::iter(vec![Ok(Msg {
                                    text: "first".into(),
                                    n: 0,
                                })]);
                                // Never ends by itself; only a cancel drops it (and the guard).
                                let rest = futures::stream::pending().map(
                                    move |m: Result<Msg, Status>| {
                                        let _keep = &guard;
                                        m
                                    },
                                );
                                Ok::<_, Status>(Response::new(
                                    first.chain(rest).boxed() as MsgStream
                                ))
                            }
                        }),
                        req,
                    )
                    .await
                }
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(resp)
        })
    }
}

impl GrpcUpstream {
    /// Starts the gRPC server on a loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let up = GrpcUpstream {
            addr: listener
                .local_addr()
                .expect("bound listener has an address"),
            endless_dropped: Arc::default(),
            endless_started: Arc::default(),
        };
        let svc = EchoService { up: up.clone() };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        up
    }
}

/// A generic gRPC client through `connect_to`, with `:authority` set to `authority`.
pub async fn client(
    connect_to: SocketAddr,
    authority: SocketAddr,
) -> tonic::client::Grpc<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{connect_to}"))
        .expect("valid endpoint")
        .origin(format!("http://{authority}").parse().expect("valid origin"));
    let channel = super::within("gRPC connect", endpoint.connect())
        .await
        .expect("gRPC channel connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    super::within("gRPC ready", grpc.ready())
        .await
        .expect("gRPC channel ready");
    grpc
}

/// The codec every call uses.
pub fn codec() -> ProstCodec<Msg, Msg> {
    ProstCodec::default()
}

/// The path of method `name` of the test service.
pub fn method(name: &str) -> PathAndQuery {
    format!("/stitch.test.Echo/{name}")
        .parse()
        .expect("valid path")
}
