//! Which worker serves an accepted connection.
//!
//! Every worker accepts on the same listening socket (a dup registered in its own runtime), so
//! whichever worker the kernel wakes first takes the connection. Left alone that piles
//! simultaneous keep-alive clients onto one worker (measured: 72% of the time for two clients),
//! and a keep-alive connection stays on its worker for life. So a worker that already holds
//! clearly more open connections than the least-loaded one hands the accepted socket over:
//! through that worker's queue, which wakes it. That is the only cross-worker wake-up, and it
//! happens on accept, never per request.
//!
//! Loads are one atomic per worker (on its own cache line), updated on accept and close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::direction::Direction;
use crate::telemetry::Metrics;

/// An accepted connection on its way to the worker that will serve it. Dropping it closes the
/// connection and gives its permit and load back.
#[derive(Debug)]
pub(crate) struct Handoff {
    /// The socket, out of the accepting worker's reactor.
    pub stream: std::net::TcpStream,
    /// The client's address.
    pub client: SocketAddr,
    /// The listener it arrived on.
    pub direction: Direction,
    /// Its place under the listener's connection limit.
    pub permit: OwnedSemaphorePermit,
    /// Its share of the serving worker's load.
    pub load: Load,
}

/// One worker's load and queue, on a cache line of its own: every accept reads all loads,
/// and neighbours must not share a line that each worker writes.
#[derive(Debug)]
#[repr(align(64))]
struct Member {
    open: AtomicUsize,
    queue: UnboundedSender<Handoff>,
    connections: Counter,
}

/// Every worker's load and hand-off queue; shared by all workers, read on accept only.
#[derive(Debug)]
pub(crate) struct Team {
    members: Box<[Member]>,
    /// Off: every worker keeps what it accepts (only for measuring what hand-off buys).
    handoff: bool,
}

impl Team {
    /// A team of `workers`, with each worker's receiving end of its hand-off queue (in order).
    pub(crate) fn new(
        workers: usize,
        handoff: bool,
        metrics: &Metrics,
    ) -> (Arc<Team>, Vec<UnboundedReceiver<Handoff>>) {
        let (members, queues) = (0..workers.max(1))
            .map(|index| {
                let (queue, rx) = unbounded_channel();
                let member = Member {
                    open: AtomicUsize::new(0),
                    queue,
                    connections: metrics.worker_connections(index),
                };
                (member, rx)
            })
            .unzip::<_, _, Vec<_>, Vec<_>>();
        (
            Arc::new(Team {
                members: members.into_boxed_slice(),
                handoff,
            }),
            queues,
        )
    }

    /// Worker `index`'s place in the team.
    pub(crate) fn seat(self: &Arc<Self>, index: usize) -> Seat {
        Seat {
            team: self.clone(),
            index,
        }
    }
}

/// One worker's view of the team: where it hands connections to.
#[derive(Debug, Clone)]
pub(crate) struct Seat {
    team: Arc<Team>,
    index: usize,
}

impl Seat {
    /// This worker's index (the `worker` label).
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Decides who serves a connection this worker just accepted and counts it there: this
    /// worker, unless it holds clearly more open connections than the least-loaded one (any
    /// more while loads are small, an eighth more once they are large, so a busy pod does not
    /// shuffle sockets over a difference of one).
    pub(crate) fn place(&self) -> (usize, Load) {
        let members = &self.team.members;
        let mine = members[self.index].open.load(Ordering::Relaxed);
        let mut target = self.index;
        if mine > 0 && self.team.handoff && members.len() > 1 {
            let (least, load) = members
                .iter()
                .enumerate()
                .map(|(i, m)| (i, m.open.load(Ordering::Relaxed)))
                .min_by_key(|&(_, open)| open)
                .unwrap_or((self.index, mine));
            if load < mine && mine - load > mine / 8 {
                target = least;
            }
        }
        let member = &members[target];
        member.open.fetch_add(1, Ordering::Relaxed);
        member.connections.inc();
        let load = Load {
            team: self.team.clone(),
            index: target,
        };
        (target, load)
    }

    /// Queues `handoff` for worker `target`, waking it; gives it back when that worker is gone
    /// (it stopped at shutdown).
    pub(crate) fn hand_off(&self, target: usize, handoff: Handoff) -> Result<(), Handoff> {
        self.team.members[target]
            .queue
            .send(handoff)
            .map_err(|e| e.0)
    }
}

/// One open connection counted in a worker's load until dropped.
#[derive(Debug)]
pub(crate) struct Load {
    team: Arc<Team>,
    index: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.team.members[self.index]
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_connection_goes_to_the_idle_worker_whoever_accepts_it() {
        let (team, _queues) = Team::new(2, true, &Metrics::new());
        let (first, _a) = team.seat(0).place();
        assert_eq!(first, 0, "an idle worker keeps what it accepts");
        let (second, _b) = team.seat(0).place();
        assert_eq!(second, 1, "the busier worker hands off");
        let (third, _c) = team.seat(1).place();
        assert_eq!(third, 1, "equal loads: kept");
    }

    #[test]
    fn closing_gives_the_load_back_and_small_differences_stay_put() {
        let (team, _queues) = Team::new(2, true, &Metrics::new());
        let seat = team.seat(0);
        let held: Vec<Load> = (0..32).map(|_| seat.place().1).collect();
        let on_one = held.iter().filter(|l| l.index == 1).count();
        assert_eq!(
            on_one, 15,
            "17 against 15: within an eighth of the busier worker"
        );
        drop(held);
        assert_eq!(seat.place().0, 0, "every load was given back");

        let (team, _queues) = Team::new(2, true, &Metrics::new());
        let (a, b) = (team.seat(0), team.seat(1));
        let mut held: Vec<Load> = (0..17).map(|_| b.place().1).collect();
        held.extend((0..19).map(|_| a.place().1));
        assert_eq!(
            team.members[0].open.load(Ordering::Relaxed),
            19,
            "19 against 17 is within an eighth: no hand-off"
        );
    }

    #[test]
    fn a_gone_worker_gives_the_connection_back() {
        let (team, queues) = Team::new(2, true, &Metrics::new());
        drop(queues);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a permit");
        let seat = team.seat(0);
        let (_, load) = seat.place();
        let handoff = Handoff {
            stream,
            client: listener.local_addr().expect("addr"),
            direction: Direction::Inbound,
            permit,
            load,
        };
        assert!(seat.hand_off(1, handoff).is_err());
        assert_eq!(team.members[0].open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn without_hand_off_a_worker_keeps_what_it_accepts() {
        let (team, _queues) = Team::new(2, false, &Metrics::new());
        let held: Vec<Load> = (0..3).map(|_| team.seat(0).place().1).collect();
        assert!(held.iter().all(|l| l.index == 0));
    }
}
