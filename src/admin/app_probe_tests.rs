//! The app prober against real servers on loopback: TCP, HTTP, HTTPS and gRPC health.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use tokio::net::TcpListener;

use super::*;
use crate::config::app_probes::{HttpHeader, TcpSocketProbe};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn probe(action: ProbeAction) -> AppProbe {
    AppProbe {
        action,
        timeout_seconds: 5,
    }
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let l = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    l.local_addr().unwrap().port()
}

/// Serves HTTP/1 and HTTP/2 with `handler` until the test ends.
async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"x")));
    *r.status_mut() = StatusCode::from_u16(code).unwrap();
    r
}

#[tokio::test]
async fn tcp_passes_when_the_app_listens_and_fails_when_it_does_not() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tcp = |port| probe(ProbeAction::TcpSocket(TcpSocketProbe { port }));
    assert_eq!(perform(&tcp(port), LOCALHOST, None).await, Verdict::Pass);
    drop(listener);
    assert!(matches!(
        perform(&tcp(port), LOCALHOST, None).await,
        Verdict::Fail(_)
    ));
}

#[tokio::test]
async fn http_follows_the_kubelet_rules_for_status_path_and_headers() {
    let addr = serve(|req: Request<Incoming>| async move {
        let header = req.headers().get("x-probe").and_then(|v| v.to_str().ok());
        let agent = req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok());
        match (req.uri().path(), header, agent) {
            ("/healthz", Some("1"), Some("kube-probe/1.31")) => status(204),
            ("/moved", _, _) => status(302),
            ("/broken", _, _) => status(500),
            _ => status(404),
        }
    })
    .await;
    let get = |path: &str, headers: Vec<HttpHeader>| {
        probe(ProbeAction::HttpGet(HttpGetProbe {
            port: addr.port(),
            path: path.to_owned(),
            scheme: HttpScheme::Http,
            http_headers: headers,
        }))
    };
    let header = vec![HttpHeader {
        name: "X-Probe".into(),
        value: "1".into(),
    }];
    let kubelet = Some(HeaderValue::from_static("kube-probe/1.31"));
    assert_eq!(
        perform(&get("/healthz", header.clone()), LOCALHOST, kubelet.clone()).await,
        Verdict::Pass
    );
    assert_eq!(
        perform(&get("/healthz", vec![]), LOCALHOST, kubelet.clone()).await,
        Verdict::Status(StatusCode::NOT_FOUND),
        "without its header the probe is a different request"
    );
    assert_eq!(
        perform(&get("/moved", vec![]), LOCALHOST, None).await,
        Verdict::Pass
    );
    assert_eq!(
        perform(&get("/broken", vec![]), LOCALHOST, None).await,
        Verdict::Status(StatusCode::INTERNAL_SERVER_ERROR)
    );
    let dead = probe(ProbeAction::HttpGet(HttpGetProbe {
        port: closed_port().await,
        path: "/".into(),
        scheme: HttpScheme::Http,
        http_headers: vec![],
    }));
    assert!(matches!(
        perform(&dead, LOCALHOST, None).await,
        Verdict::Fail(_)
    ));
}

#[tokio::test]
async fn an_app_that_never_answers_fails_within_the_timeout() {
    // Accepts and then says nothing.
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut silent = probe(ProbeAction::HttpGet(HttpGetProbe {
        port,
        path: "/".into(),
        scheme: HttpScheme::Http,
        http_headers: vec![],
    }));
    silent.timeout_seconds = 1;
    let verdict = perform(&silent, LOCALHOST, None).await;
    assert!(
        matches!(&verdict, Verdict::Fail(why) if why.contains("no answer")),
        "{verdict:?}"
    );
    hold.abort();
}

#[tokio::test]
async fn https_probes_do_not_verify_the_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["app.invalid".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|_req| async { Ok::<_, Infallible>(status(200)) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let https = probe(ProbeAction::HttpGet(HttpGetProbe {
        port,
        path: "/".into(),
        scheme: HttpScheme::Https,
        http_headers: vec![],
    }));
    assert_eq!(perform(&https, LOCALHOST, None).await, Verdict::Pass);
}

/// A gRPC health server whose answer depends on the requested service.
async fn health_server() -> SocketAddr {
    serve(|req: Request<Incoming>| async move {
        assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        let request = HealthCheckRequest::decode(&bytes[5..]).unwrap();
        let status = match request.service.as_str() {
            "" | "orders" => SERVING,
            _ => 2, // NOT_SERVING
        };
        let message = HealthCheckResponse { status }.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let mut response = Response::new(Full::new(Bytes::from(framed)));
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        // grpc-status in the headers: the prober accepts it there (as for trailers-only).
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static("0"));
        response
    })
    .await
}

#[tokio::test]
async fn grpc_probes_ask_the_health_service() {
    let addr = health_server().await;
    let grpc = |service: Option<&str>| {
        probe(ProbeAction::Grpc(GrpcProbe {
            port: addr.port(),
            service: service.map(str::to_owned),
        }))
    };
    assert_eq!(perform(&grpc(None), LOCALHOST, None).await, Verdict::Pass);
    assert_eq!(
        perform(&grpc(Some("orders")), LOCALHOST, None).await,
        Verdict::Pass
    );
    assert!(matches!(
        perform(&grpc(Some("billing")), LOCALHOST, None).await,
        Verdict::Fail(why) if why.contains("not SERVING")
    ));
    let dead = probe(ProbeAction::Grpc(GrpcProbe {
        port: closed_port().await,
        service: None,
    }));
    assert!(matches!(
        perform(&dead, LOCALHOST, None).await,
        Verdict::Fail(_)
    ));
}
