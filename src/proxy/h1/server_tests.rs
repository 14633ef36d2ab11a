//! Tests of [`super::server`] over real sockets: exchanges, bodies, framing of responses,
//! refusals (helpers in `server_test_support`).

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::error::Error;
use super::head::HeaderCase;
use super::incoming::Incoming;
use super::server::ServerSettings;
use super::server_test_support::{Client, GUARD, Pieces, Reply, echo, serve_tcp, settings};
use crate::proxy::http::validate::Rejection;
use crate::shutdown::ShutdownHandle;

async fn echo_tcp() -> (Client<TcpStream>, JoinHandle<Result<(), Error>>) {
    serve_tcp(
        tower::service_fn(echo),
        settings(),
        ShutdownHandle::default(),
        None,
    )
    .await
}

#[tokio::test]
async fn keep_alive_serves_two_requests_on_one_connection() {
    let (mut c, task) = echo_tcp().await;
    c.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /one "));
    assert_eq!(r.header("content-length").as_deref(), Some("9"));
    assert!(r.header("date").is_none() && r.header("connection").is_none());
    c.send(b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.text(), "POST /two hello");
    drop(c);
    task.await.expect("task").expect("a clean end");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (mut c, _task) = echo_tcp().await;
    c.send(
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(c.response(false).await.text(), "POST /a abc");
    assert_eq!(c.response(false).await.text(), "GET /b ");
    let last = c.response(false).await;
    assert_eq!(last.text(), "GET /c ");
    assert!(c.closed().await, "Connection: close ends it");
}

#[tokio::test]
async fn a_chunked_body_streams_to_the_service_in_pieces_with_its_trailers() {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Bytes>();
    let first_tx = std::sync::Mutex::new(Some(first_tx));
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let first_tx = first_tx.lock().expect("lock").take();
        async move {
            let mut body = req.into_body();
            let first = body.frame().await.expect("a frame").expect("ok");
            let _ = first_tx
                .expect("once")
                .send(first.into_data().expect("data"));
            let rest = body.collect().await.expect("rest");
            let trailers = rest.trailers().cloned().unwrap_or_default();
            let text = format!(
                "{} t={:?}",
                String::from_utf8_lossy(&rest.to_bytes()),
                trailers.get("x-sum")
            );
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
        }
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
        .await;
    let first = tokio::time::timeout(GUARD, first_rx)
        .await
        .expect("first piece");
    assert_eq!(
        &first.expect("sent")[..],
        b"hello",
        "before the rest was sent"
    );
    c.send(b"6\r\n world\r\n0\r\nX-Sum: 7\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.text(), " world t=Some(\"7\")");
}

#[tokio::test]
async fn a_content_length_body_and_a_malformed_chunked_body() {
    let (mut c, _task) = echo_tcp().await;
    c.send(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world")
        .await;
    assert_eq!(c.response(false).await.text(), "PUT /x hello world");
    c.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("chunk"), "{}", r.text());
    assert!(c.closed().await, "a broken body ends the connection");
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_first_read() {
    let (mut c, _task) = echo_tcp().await;
    c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.response(false).await;
    assert_eq!(interim.status, 100);
    c.send(b"ok").await;
    assert_eq!(c.response(false).await.text(), "POST /e ok");
    // A service that answers without reading the body sends no 100, and the connection
    // closes (the body's bytes were never read).
    let service = tower::service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"no"))))
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "no"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_the_connection_stays_usable() {
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        let status = match req.uri().path() {
            "/204" => 204,
            "/304" => 304,
            _ => 200,
        };
        let mut r = Response::new(Full::new(Bytes::from_static(b"twelve bytes")));
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        Ok::<_, Infallible>(r)
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200);
    c.send(b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 204);
    c.send(b"GET /304 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 304);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(
        r.text(),
        "twelve bytes",
        "no stray body bytes came before it"
    );
}

fn unsized_body_service() -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Pieces>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Pieces>, Infallible>> + Send,
> + Send
+ 'static {
    tower::service_fn(|_req: Request<Incoming>| async {
        let pieces = [&b"streamed "[..], b"in ", b"pieces"].map(Bytes::from_static);
        Ok::<_, Infallible>(Response::new(Pieces(pieces.into())))
    })
}

#[tokio::test]
async fn an_unsized_body_is_chunked_to_1_1_and_close_delimited_to_1_0() {
    let (mut c, _task) = serve_tcp(
        unsized_body_service(),
        settings(),
        ShutdownHandle::default(),
        None,
    )
    .await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.text(), "streamed in pieces");

    let (mut c, _task) = serve_tcp(
        unsized_body_service(),
        settings(),
        ShutdownHandle::default(),
        None,
    )
    .await;
    c.send(b"GET / HTTP/1.0\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.header("transfer-encoding").is_none() && r.header("content-length").is_none());
    assert_eq!(r.text(), "streamed in pieces", "read to the close");
}

#[tokio::test]
async fn http_1_0_closes_unless_keep_alive_and_connection_close_closes() {
    let (mut c, _task) = echo_tcp().await;
    c.send(b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
    c.send(b"GET /c HTTP/1.0\r\n\r\n").await;
    assert_eq!(c.response(false).await.text(), "GET /c ");
    assert!(
        c.closed().await,
        "1.0 without keep-alive ends after the response"
    );
}

/// Sends `request` on a fresh connection; the response, what followed it, and the result.
async fn refused(request: &[u8], settings: ServerSettings) -> (Reply, bool, Result<(), Error>) {
    let (mut c, task) = serve_tcp(
        tower::service_fn(echo),
        settings,
        ShutdownHandle::default(),
        None,
    )
    .await;
    c.send(request).await;
    let r = c.response(false).await;
    let closed = c.closed().await;
    let result = tokio::time::timeout(GUARD, task).await.expect("ends");
    (r, closed, result.expect("task"))
}

#[tokio::test]
async fn refused_heads_get_400_431_or_414_then_the_connection_closes() {
    let many: String = (0..17).map(|i| format!("x-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx: {}\r\n\r\n",
        "v".repeat(9000)
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nbad name: v\r\n\r\n".to_vec(), 400),
        (
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            400,
        ),
        (many.into_bytes(), 431),
        (big.into_bytes(), 431),
    ];
    for (request, want) in cases {
        let (r, closed, result) = refused(&request, settings()).await;
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
        assert_eq!(r.status, want, "{shown}");
        assert_eq!(r.header("content-length").as_deref(), Some("0"), "{shown}");
        assert!(closed, "{shown}: closed after the refusal");
        let e = result.expect_err("reported");
        assert_eq!(e.refused_with().map(|s| s.as_u16()), Some(want), "{shown}");
    }
    let mut roomy = settings();
    roomy.limits.max_head_bytes = 200 * 1024;
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70 * 1024));
    let (r, closed, _) = refused(long.as_bytes(), roomy).await;
    assert_eq!((r.status, closed), (414, true));
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_reported_for_the_metric() {
    let (r, closed, result) = refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        settings(),
    )
    .await;
    assert_eq!((r.status, closed), (400, true));
    let e = result.expect_err("reported");
    assert_eq!(e.rejection(), Some(Rejection::AmbiguousFraming));
}

#[tokio::test]
async fn bare_lf_heads_are_read_and_field_case_order_and_reason_are_kept() {
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_FOUND;
        *r.headers_mut() = req.headers().clone();
        r.headers_mut().remove("host");
        if let Some(case) = req.extensions().get::<HeaderCase>() {
            r.extensions_mut().insert(case.clone());
        }
        r.extensions_mut()
            .insert(super::ext::ReasonPhrase(Bytes::from_static(
                b"Gone Fishing \xe9",
            )));
        Ok::<_, Infallible>(r)
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"GET / HTTP/1.1\nHost: a\nX-Rep: 1\nX-EMPTY:\nx-rep: 2\n\n")
        .await;
    let r = c.response(false).await;
    assert!(
        r.head.starts_with("HTTP/1.1 404 Gone Fishing \u{fffd}\r\n"),
        "{:?}",
        r.head
    );
    // Per name, the values in received order, each with its own spelling (the map's order of
    // names is its own: `remove` swaps entries).
    assert!(r.head.contains("X-Rep: 1\r\nx-rep: 2\r\n"), "{:?}", r.head);
    assert!(r.head.contains("\r\nX-EMPTY: \r\n"), "{:?}", r.head);
}

#[tokio::test]
async fn a_failing_service_closes_the_connection_unanswered() {
    let service = tower::service_fn(|_req: Request<Incoming>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::other("upstream gone"))
    });
    let (mut c, task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(c.closed().await, "no response, closed");
    let result = task.await.expect("task");
    assert!(matches!(result, Err(Error::Service(_))), "{result:?}");
}

/// With parking on, a keep-alive connection idle for `park_after` comes back from `serve`
/// whole (its write half rejoined, nothing of a next request buffered), and serving it
/// again goes on where it left off.
#[tokio::test]
async fn an_idle_connection_comes_back_whole_to_be_parked_and_serves_again() {
    let settings = settings().parking_after(std::time::Duration::from_millis(20));
    let shutdown = ShutdownHandle::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut c = Client::new(
        TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect"),
    );
    let (server, _) = listener.accept().await.expect("accept");
    let serve_once = |io: TcpStream| {
        super::server::serve(
            io,
            Bytes::new(),
            tower::service_fn(echo),
            &settings,
            &shutdown,
            None,
            tokio::time::Instant::now() + GUARD,
        )
    };
    let serving = serve_once(server);
    let client = async {
        c.send(b"GET /before HTTP/1.1\r\nHost: a\r\n\r\n").await;
        c.response(false).await
    };
    let (parked, before) = tokio::time::timeout(GUARD, async { tokio::join!(serving, client) })
        .await
        .expect("the connection idles and comes back");
    assert_eq!(before.text(), "GET /before ");
    let parked = parked
        .expect("a clean end")
        .expect("handed back to be parked");
    assert!(parked.idle.deadline > parked.idle.since);
    // The client sends while the connection is out of the driver; the next driver reads it.
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let serving = serve_once(parked.io);
    let (ended, after) =
        tokio::time::timeout(GUARD, async { tokio::join!(serving, c.response(false)) })
            .await
            .expect("served again");
    assert_eq!(after.text(), "GET /after ");
    assert!(ended.expect("a clean end").is_none(), "closed, not parked");
    assert!(c.closed().await);
}
