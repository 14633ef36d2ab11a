//! The lot where idle HTTP/1 keep-alive client connections wait for their next request
//! without a task.
//!
//! A connection served by a task costs that task (its future is as large as the largest state
//! it may be in, ~2 KiB) plus tokio's registration of its socket (~256 B, cache-line aligned),
//! for as long as it is open — idle or not. Keep-alive clients hold thousands of connections
//! that are idle almost all the time (issue 15: 5,000 idle connections, nginx ~0.7 KiB each).
//! So a connection idle for a short while (`--idle-park-after`) leaves the runtime: its
//! socket is deregistered from tokio and registered in this lot's own epoll set, and what is
//! needed to serve it again (its lease, client, destination, …) waits in a slab entry of
//! about 180 bytes. When the client sends, the lot hands the socket back (`resume`), which
//! spawns a task to serve it; when the client closes, the lot closes it. A connection between
//! quick requests never parks; one idle longer pays four `epoll_ctl` calls, a peek and a
//! spawn per idle period (~17,000 instructions, ARCHITECTURE.md).
//!
//! The lot keeps what an idle connection in a task had: `--idle-timeout` still closes it, a
//! drain closes it at once, and a client waiting at the connection cap closes it when it has
//! been idle for [`IDLE_ENOUGH`] ([`super::cap`]). One lot per worker, run by one task on
//! that worker's runtime.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::cap::IDLE_ENOUGH;
use crate::direction::Direction;
use crate::shutdown::ShutdownHandle;
use crate::telemetry::{ConnectionGuard, Metrics};

/// How many readiness events one `epoll_wait` takes at most.
const EVENTS_PER_POLL: usize = 256;

/// Slots per block of the lot's slab.
const SLAB_CHUNK: usize = 64;

/// Idle connections of one worker, each with the state `T` needed to serve it again.
pub(crate) struct Lot<T> {
    /// Registers and deregisters parked sockets (thread-safe, unlike the poll itself).
    registry: mio::Registry,
    /// The epoll set, until [`Lot::run`] takes it.
    poll: Mutex<Option<mio::Poll>>,
    state: Mutex<State<T>>,
    /// Wakes the lot's task when a parked connection's deadline is the earliest one.
    earlier: Notify,
    metrics: Metrics,
}

/// The parked connections, in a slab of fixed blocks whose free slots are reused: the lot's
/// memory is a few blocks of [`SLAB_CHUNK`] entries rather than an allocation per connection
/// scattered among the short-lived ones of busy connections (which is what fragments a heap),
/// and a block is never moved (a growing vector leaves its old copies behind in the heap).
struct State<T> {
    slots: Vec<Box<[Slot<T>]>>,
    /// The first vacant slot (`usize::MAX`: none).
    free: usize,
    len: usize,
    /// Tells an entry from an earlier one in the same slot.
    generation: u64,
    /// Idle deadlines, earliest first, with their slot and generation; an entry resumed or
    /// closed meanwhile leaves its deadline here (`stale`) until it comes up or the heap is
    /// compacted.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    stale: usize,
    /// No longer taking connections (shutdown).
    closed: bool,
}

/// A slot of the slab.
enum Slot<T> {
    Vacant { next_free: usize },
    Occupied(Entry<T>),
}

/// One parked connection.
struct Entry<T> {
    stream: TcpStream,
    direction: Direction,
    /// Whether a client waiting at the cap may close it.
    room_closable: bool,
    generation: u64,
    idle_since: Instant,
    /// The state needed to serve it again.
    resume: T,
    _gauge: ConnectionGuard,
}

/// A connection to park: its socket, taken out of tokio, and its idle clock.
#[derive(Debug)]
pub(crate) struct ToPark<T> {
    /// The client socket (non-blocking).
    pub(crate) stream: TcpStream,
    /// Which listener it came from (the cap's wake-up is per direction).
    pub(crate) direction: Direction,
    /// When it began waiting for its next request.
    pub(crate) idle_since: Instant,
    /// When `--idle-timeout` closes it.
    pub(crate) idle_deadline: Instant,
    /// Whether a client waiting at the connection cap may close it.
    pub(crate) room_closable: bool,
    /// What serving it again needs.
    pub(crate) resume: T,
}

impl<T> std::fmt::Debug for Lot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lot")
            .field("parked", &self.lock().len)
            .finish_non_exhaustive()
    }
}

impl<T> Lot<T> {
    /// An empty lot with an epoll set of its own; parked connections count in
    /// `stitch_idle_parked_connections`.
    pub(crate) fn new(metrics: Metrics) -> io::Result<Self> {
        let poll = mio::Poll::new()?;
        Ok(Lot {
            registry: poll.registry().try_clone()?,
            poll: Mutex::new(Some(poll)),
            state: Mutex::new(State {
                slots: Vec::new(),
                free: usize::MAX,
                len: 0,
                generation: 0,
                deadlines: BinaryHeap::new(),
                stale: 0,
                closed: false,
            }),
            earlier: Notify::new(),
            metrics,
        })
    }

    /// Never poisoned in practice (nothing panics under it); recovered if it were.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections are parked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    /// Parks `conn` until its client sends, its idle deadline, shutdown or the cap closes it.
    /// After shutdown, or if its socket cannot be watched, it is closed at once.
    pub(crate) fn park(&self, conn: ToPark<T>) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.generation += 1;
        let entry = Entry {
            stream: conn.stream,
            direction: conn.direction,
            room_closable: conn.room_closable,
            generation: state.generation,
            idle_since: conn.idle_since,
            resume: conn.resume,
            _gauge: self.metrics.connection_parked(conn.direction),
        };
        let fd = entry.stream.as_raw_fd();
        let key = state.insert(entry);
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
        {
            let closed = state.remove(key);
            drop(state);
            drop(closed);
            return tracing::debug!(error = %e, "cannot watch an idle connection; closing it");
        }
        let earliest = state
            .deadlines
            .peek()
            .is_none_or(|Reverse((at, _, _))| conn.idle_deadline < *at);
        let generation = state.generation;
        state
            .deadlines
            .push(Reverse((conn.idle_deadline, key, generation)));
        drop(state);
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// Serves the lot until shutdown: hands each connection whose client sent to `resume`
    /// (closing those whose client closed), closes those past their idle deadline, and —
    /// when a client waits at the cap of a direction (`room[0]` inbound, `room[1]` outbound)
    /// — those idle for [`IDLE_ENOUGH`]. At shutdown every parked connection is closed.
    pub(crate) async fn run(
        self: Arc<Self>,
        shutdown: ShutdownHandle,
        room: [Arc<Notify>; 2],
        resume: impl Fn(TcpStream, Direction, T),
    ) {
        let poll = self.poll.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(poll) = poll else {
            return;
        };
        // SAFETY: `mio::Poll` owns its epoll descriptor from creation to drop and always
        // returns that one from `as_raw_fd`: it is valid, open and the same for as long as
        // the `AsyncFd` holds the poll, which is what `register_with_interest` asks (tokio
        // deprecated the safe constructors because an arbitrary `AsRawFd` may not promise it).
        // The crate's one `unsafe` block (ARCHITECTURE.md, Decisions, "Idle HTTP/1 connections are
        // parked, not tasks").
        #[allow(unsafe_code)]
        let registered =
            unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) };
        let mut poll = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the idle-connection lot; closing what is parked there");
                return self.close_all();
            }
        };
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let next_deadline = self.next_deadline();
            tokio::select! {
                biased;
                () = shutdown.triggered() => return self.close_all(),
                ready = poll.readable_mut() => {
                    let Ok(mut ready) = ready else {
                        return self.close_all();
                    };
                    if self.resume_ready(ready.get_inner_mut(), &mut events, &resume) {
                        ready.clear_ready();
                    }
                }
                () = sleep_until(next_deadline) => self.close_expired(),
                () = self.earlier.notified() => {}
                () = room[0].notified() => self.close_for_room(Direction::Inbound),
                () = room[1].notified() => self.close_for_room(Direction::Outbound),
            }
        }
    }

    /// Hands every connection the epoll set reports readable to `resume` (or closes it, see
    /// [`Self::take`]); `true` when the set is drained, so a socket that becomes readable
    /// from now on is a new edge that sets the readiness again. Drained in one go: under load
    /// the lot's task is polled once per turn of a long run queue, and a batch per turn left
    /// thousands of clients that had sent waiting turn after turn (2 s timeouts measured at
    /// 5,000 busy connections).
    fn resume_ready(
        &self,
        poll: &mut mio::Poll,
        events: &mut Events,
        resume: &impl Fn(TcpStream, Direction, T),
    ) -> bool {
        loop {
            if poll.poll(events, Some(std::time::Duration::ZERO)).is_err() {
                return false;
            }
            let mut count = 0;
            for event in events.iter() {
                count += 1;
                if let Some((stream, direction, state)) = self.take(event.token().0) {
                    resume(stream, direction, state);
                }
            }
            if count < EVENTS_PER_POLL {
                return true;
            }
        }
    }

    /// The earliest idle deadline still pending, if any.
    fn next_deadline(&self) -> Option<Instant> {
        self.lock().deadlines.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes the entry `key` (its socket became readable) and gives its socket back, out of
    /// the lot's epoll set. `None` when it is gone already; when its client closed it (closed
    /// here: no task is started to read an end of stream, as thousands of idle clients leaving
    /// at once would be thousands of tasks at once); or when nothing is there after all (it
    /// stays parked — also what a late event for a reused slot finds).
    fn take(&self, key: usize) -> Option<(TcpStream, Direction, T)> {
        let mut state = self.lock();
        let client_sent = match state.get(key)?.stream.peek(&mut [0; 1]) {
            Ok(n) => n > 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            // A failed socket: closed with its entry.
            Err(_) => false,
        };
        let entry = state.remove(key)?;
        state.forgot_one();
        drop(state);
        if !client_sent {
            return None;
        }
        let fd = entry.stream.as_raw_fd();
        // A socket still in this set would keep reporting here while tokio serves it.
        if let Err(e) = self.registry.deregister(&mut SourceFd(&fd)) {
            tracing::debug!(error = %e, "cannot take an idle connection out of the lot; closing it");
            return None;
        }
        Some((entry.stream, entry.direction, entry.resume))
    }

    /// Closes the connections whose idle deadline has passed.
    fn close_expired(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        let mut state = self.lock();
        while let Some(Reverse((at, key, generation))) = state.deadlines.peek().copied() {
            if at > now {
                break;
            }
            state.deadlines.pop();
            if state.get(key).is_some_and(|e| e.generation == generation) {
                closed.extend(state.remove(key));
            } else {
                state.stale = state.stale.saturating_sub(1);
            }
        }
        drop(state);
        if !closed.is_empty() {
            tracing::debug!(
                count = closed.len(),
                "closing idle HTTP/1 keep-alive client connections"
            );
        }
        // Dropped outside the lock: closing a socket and reporting its lease take a while.
        drop(closed);
    }

    /// Closes the connections of `direction` idle for [`IDLE_ENOUGH`]: a client waits at
    /// the cap.
    fn close_for_room(&self, direction: Direction) {
        let now = Instant::now();
        let mut state = self.lock();
        let keys: Vec<usize> = (state
            .slots
            .iter()
            .flat_map(|chunk| chunk.iter())
            .enumerate())
        .filter(|(_, slot)| {
            matches!(slot, Slot::Occupied(e) if e.direction == direction
                    && e.room_closable
                    && e.idle_since + IDLE_ENOUGH <= now)
        })
        .map(|(key, _)| key)
        .collect();
        let closed: Vec<Entry<T>> = keys.iter().filter_map(|key| state.remove(*key)).collect();
        for _ in &closed {
            state.forgot_one();
        }
        drop(state);
        if !closed.is_empty() {
            tracing::debug!(
                count = closed.len(),
                %direction,
                "closing idle HTTP/1 keep-alive client connections: a client waits at the connection cap"
            );
        }
        drop(closed);
    }

    /// Closes every parked connection and takes no more (shutdown).
    fn close_all(&self) {
        let mut state = self.lock();
        state.closed = true;
        let slots = std::mem::take(&mut state.slots);
        state.free = usize::MAX;
        state.len = 0;
        state.deadlines.clear();
        state.stale = 0;
        drop(state);
        drop(slots);
    }
}

impl<T> State<T> {
    /// Puts `entry` in a vacant slot (adding a block when none is): its key.
    fn insert(&mut self, entry: Entry<T>) -> usize {
        if self.free == usize::MAX {
            let base = self.slots.len() * SLAB_CHUNK;
            let chunk = (base + 1..=base + SLAB_CHUNK)
                .map(|next| Slot::Vacant {
                    next_free: if next < base + SLAB_CHUNK {
                        next
                    } else {
                        usize::MAX
                    },
                })
                .collect();
            self.slots.push(chunk);
            self.free = base;
        }
        let key = self.free;
        let Some(slot) = self.slot_mut(key) else {
            return key;
        };
        let next_free = match slot {
            Slot::Vacant { next_free } => *next_free,
            Slot::Occupied(_) => usize::MAX,
        };
        *slot = Slot::Occupied(entry);
        self.free = next_free;
        self.len += 1;
        key
    }

    fn slot_mut(&mut self, key: usize) -> Option<&mut Slot<T>> {
        self.slots
            .get_mut(key / SLAB_CHUNK)?
            .get_mut(key % SLAB_CHUNK)
    }

    /// The entry in slot `key`, if occupied.
    fn get(&self, key: usize) -> Option<&Entry<T>> {
        match self.slots.get(key / SLAB_CHUNK)?.get(key % SLAB_CHUNK)? {
            Slot::Occupied(entry) => Some(entry),
            Slot::Vacant { .. } => None,
        }
    }

    /// Takes the entry out of slot `key`, if occupied.
    fn remove(&mut self, key: usize) -> Option<Entry<T>> {
        let free = self.free;
        let slot = self.slot_mut(key)?;
        if let Slot::Vacant { .. } = slot {
            return None;
        }
        match std::mem::replace(slot, Slot::Vacant { next_free: free }) {
            Slot::Occupied(entry) => {
                self.free = key;
                self.len -= 1;
                Some(entry)
            }
            Slot::Vacant { .. } => None,
        }
    }

    /// An entry left before its deadline came up: its deadline is stale. The heap is rebuilt
    /// when stale deadlines outnumber live ones, so a connection parked and resumed over and
    /// over (each time with a new deadline an `--idle-timeout` away) cannot grow it.
    fn forgot_one(&mut self) {
        self.stale += 1;
        if self.stale > self.len + 64 {
            let mut deadlines = std::mem::take(&mut self.deadlines);
            deadlines.retain(|Reverse((_, key, generation))| {
                self.get(*key).is_some_and(|e| e.generation == *generation)
            });
            self.deadlines = deadlines;
            self.stale = 0;
        }
    }
}

/// Sleeps until `at`; never resolves for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
