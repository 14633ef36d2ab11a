//! The lot on real sockets: what wakes a parked connection, what closes it, and that its
//! bookkeeping stays bounded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::*;

/// Far beyond anything here takes on a loaded machine; only a hang reaches it.
const GUARD: Duration = Duration::from_secs(10);

/// A lot and what `run` resumes: (payload, the socket as tokio's again, its direction).
struct Harness {
    lot: Arc<Lot<u32>>,
    resumed: mpsc::UnboundedReceiver<(u32, tokio::net::TcpStream, Direction)>,
    room: [Arc<Notify>; 2],
    shutdown: ShutdownHandle,
    run: tokio::task::JoinHandle<()>,
    metrics: Metrics,
}

impl Harness {
    fn start() -> Self {
        let metrics = Metrics::new();
        let lot = Arc::new(Lot::new(metrics.clone()).expect("an epoll set"));
        let (tx, resumed) = mpsc::unbounded_channel();
        let room = [Arc::new(Notify::new()), Arc::new(Notify::new())];
        let shutdown = ShutdownHandle::default();
        let run = tokio::spawn(lot.clone().run(
            shutdown.clone(),
            room.clone(),
            move |stream, direction, payload| {
                let stream = tokio::net::TcpStream::from_std(stream).expect("back into tokio");
                let _ = tx.send((payload, stream, direction));
            },
        ));
        Harness {
            lot,
            resumed,
            room,
            shutdown,
            run,
            metrics,
        }
    }

    /// Parks the server end of a new loopback connection; its client end.
    async fn park(
        &self,
        payload: u32,
        direction: Direction,
        idle_since: Instant,
        idle_deadline: Instant,
    ) -> tokio::net::TcpStream {
        let (client, server) = connected().await;
        self.lot.park(ToPark {
            direction,
            idle_since,
            ..to_park(server, payload, idle_deadline)
        });
        client
    }

    /// Waits until `n` connections are parked.
    async fn until_parked(&self, n: usize) {
        tokio::time::timeout(GUARD, async {
            while self.lot.len() != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} parked, never {n}", self.lot.len()));
    }

    fn parked_gauge(&self, direction: &str) -> String {
        let text = self.metrics.encode();
        let name = format!("stitch_idle_parked_connections{{direction=\"{direction}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name))
            .unwrap_or("missing")
            .to_owned()
    }
}

/// A loopback connection: the client end (tokio) and the server end (std, non-blocking, as
/// `into_std` leaves a socket).
async fn connected() -> (tokio::net::TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (client, server.into_std().expect("out of tokio"))
}

/// Whether the peer closed `client`'s connection (reads the end of stream, or a reset).
async fn closed_by_peer(client: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0; 1];
    match tokio::time::timeout(GUARD, client.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the connection stayed open"),
    }
}

/// Whether the connection is still open and silent (nothing arrives in a short wait).
async fn still_open(client: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0; 1];
    tokio::time::timeout(Duration::from_millis(100), client.read(&mut byte))
        .await
        .is_err()
}

/// An inbound connection idle since now, closable for room, due at `idle_deadline`.
fn to_park(stream: TcpStream, payload: u32, idle_deadline: Instant) -> ToPark<u32> {
    ToPark {
        stream,
        direction: Direction::Inbound,
        idle_since: Instant::now(),
        idle_deadline,
        room_closable: true,
        resume: payload,
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

#[tokio::test]
async fn a_client_that_sends_gets_its_connection_served_again_with_its_bytes_unread() {
    let mut h = Harness::start();
    let mut client = h.park(7, Direction::Outbound, Instant::now(), far()).await;
    h.until_parked(1).await;
    assert_eq!(h.parked_gauge("outbound"), "1");
    client.write_all(b"GET / HTTP/1.1\r\n").await.expect("send");
    let (payload, mut stream, direction) = tokio::time::timeout(GUARD, h.resumed.recv())
        .await
        .expect("resumed")
        .expect("a resumed connection");
    assert_eq!((payload, direction), (7, Direction::Outbound));
    let mut got = [0; 16];
    stream
        .read_exact(&mut got)
        .await
        .expect("the request's bytes");
    assert_eq!(&got, b"GET / HTTP/1.1\r\n", "the lot consumed none of them");
    assert_eq!(h.lot.len(), 0);
    assert_eq!(h.parked_gauge("outbound"), "0");
    // Served by tokio now: the lot no longer hears about it.
    client.write_all(b"more").await.expect("send");
    let mut more = [0; 4];
    stream
        .read_exact(&mut more)
        .await
        .expect("read by its new owner");
    assert!(h.resumed.try_recv().is_err(), "resumed twice");
}

#[tokio::test]
async fn a_client_that_closes_while_parked_is_closed_without_being_served() {
    let mut h = Harness::start();
    let client = h.park(1, Direction::Inbound, Instant::now(), far()).await;
    h.until_parked(1).await;
    drop(client);
    h.until_parked(0).await;
    assert_eq!(h.parked_gauge("inbound"), "0");
    assert!(
        h.resumed.try_recv().is_err(),
        "an end of stream started a task to read it"
    );
}

#[tokio::test]
async fn the_idle_deadline_closes_a_parked_connection() {
    let mut h = Harness::start();
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut expiring = h
        .park(1, Direction::Inbound, Instant::now(), deadline)
        .await;
    let mut staying = h.park(2, Direction::Inbound, Instant::now(), far()).await;
    assert!(closed_by_peer(&mut expiring).await);
    assert!(
        Instant::now() >= deadline,
        "closed before its idle deadline"
    );
    assert_eq!(h.lot.len(), 1);
    assert!(
        still_open(&mut staying).await,
        "closed a connection not due"
    );
    assert!(h.resumed.try_recv().is_err());
}

#[tokio::test]
async fn a_deadline_left_by_an_earlier_occupant_of_a_slot_does_not_close_the_next() {
    let mut h = Harness::start();
    // The first occupant, due soon, is served again before its deadline; the next one takes
    // its slot with a deadline far away.
    let soon = Instant::now() + Duration::from_millis(150);
    let mut first = h.park(1, Direction::Inbound, Instant::now(), soon).await;
    first.write_all(b"G").await.expect("send");
    let (_, _served, _) = h.resumed.recv().await.expect("resumed");
    let mut second = h.park(2, Direction::Inbound, Instant::now(), far()).await;
    h.until_parked(1).await;
    tokio::time::sleep_until(soon + Duration::from_millis(100)).await;
    assert!(
        still_open(&mut second).await,
        "the first occupant's deadline closed the second"
    );
    assert_eq!(h.lot.len(), 1);
}

#[tokio::test]
async fn a_client_waiting_at_the_cap_closes_only_long_idle_connections_of_its_direction() {
    let h = Harness::start();
    let long_ago = Instant::now() - IDLE_ENOUGH - Duration::from_millis(10);
    let mut old_inbound = h.park(1, Direction::Inbound, long_ago, far()).await;
    let mut young_inbound = h.park(2, Direction::Inbound, Instant::now(), far()).await;
    let mut old_outbound = h.park(3, Direction::Outbound, long_ago, far()).await;
    h.until_parked(3).await;
    // `make_room` wakes the waiters it finds; the lot may be between two waits: ask until the
    // old inbound connection is gone.
    tokio::time::timeout(GUARD, async {
        while h.lot.len() == 3 {
            h.room[0].notify_waiters();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the lot made room");
    assert!(closed_by_peer(&mut old_inbound).await);
    assert!(
        still_open(&mut young_inbound).await,
        "idle too briefly to close"
    );
    assert!(
        still_open(&mut old_outbound).await,
        "the other direction's cap"
    );
    assert_eq!(h.lot.len(), 2);
}

#[tokio::test]
async fn shutdown_closes_every_parked_connection_and_any_parked_after() {
    let h = Harness::start();
    let mut parked = h.park(1, Direction::Inbound, Instant::now(), far()).await;
    h.until_parked(1).await;
    h.shutdown.trigger();
    assert!(closed_by_peer(&mut parked).await);
    tokio::time::timeout(GUARD, h.run)
        .await
        .expect("run returns at shutdown")
        .expect("run did not panic");
    let (mut late, server) = connected().await;
    h.lot.park(to_park(server, 2, far()));
    assert!(
        closed_by_peer(&mut late).await,
        "parked after shutdown and kept"
    );
    assert_eq!(h.lot.len(), 0);
}

#[tokio::test]
async fn the_deadline_heap_stays_bounded_when_a_connection_parks_over_and_over() {
    let metrics = Metrics::new();
    let lot: Lot<u32> = Lot::new(metrics).expect("an epoll set");
    let (mut client, server) = connected().await;
    client.write_all(b"x").await.expect("send");
    let mut stream = server;
    let mut key = 0;
    for round in 0..1_000 {
        lot.park(to_park(
            stream,
            round as u32,
            far() + Duration::from_millis(round),
        ));
        let taken = lot.take(key).expect("the client's byte is there");
        assert_eq!(taken.2, round as u32);
        stream = taken.0;
        key = 0;
    }
    let state = lot.lock();
    assert_eq!(state.len, 0);
    assert!(
        state.deadlines.len() <= 65,
        "{} deadlines kept for nothing parked",
        state.deadlines.len()
    );
    assert_eq!(state.slots.len(), 1, "one slab block reused");
}
