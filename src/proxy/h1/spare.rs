//! Read buffers and header maps kept per thread between requests.
//!
//! A keep-alive connection gives its read buffer up when it has nothing to read (so an idle
//! connection holds none: issue 15), and its next request needs one again — as does every
//! upstream connection between a request and its response. Freshly allocated, that was an
//! 8 KiB `malloc` and `free` per side per request (about 700 instructions an exchange, glibc's
//! slow path for a chunk that size). Buffers given up are kept here instead, a few per thread
//! (each worker is one thread, so no lock), and handed to the next read on that thread; the
//! rest are freed as before. Header maps go the same way: each message's map is two
//! allocations (its index and its entries) made when the head is parsed and freed once the
//! head has been written on the other side; a written head's map, cleared, serves the next
//! head parsed on that thread.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::BytesMut;
use http::HeaderMap;

use super::incoming::READ_CHUNK;

/// Most buffers a thread keeps: enough for the connections that finish a read and start the
/// next one within one turn of the event loop, little memory (64 KiB) per worker.
const KEPT_PER_THREAD: usize = 8;

/// Largest buffer kept: one that grew for a large head or body is freed, not kept.
const MAX_KEPT_CAPACITY: usize = 2 * READ_CHUNK;

/// Most fields a kept header map may have room for: a map grown for a huge head is freed.
const MAX_KEPT_FIELDS: usize = 96;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty header map with room for `fields`: a kept one when this thread has one.
pub(crate) fn header_map(fields: usize) -> HeaderMap {
    match MAPS.with(|maps| maps.borrow_mut().pop()) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Gives up a head's header map once the head is written: cleared (its allocations kept)
/// for this thread's next parse, unless the thread keeps enough or the map is oversized.
pub(crate) fn give_back_header_map(mut map: HeaderMap) {
    if map.capacity() > MAX_KEPT_FIELDS {
        return;
    }
    map.clear();
    keep(&MAPS, map);
}

/// An empty buffer with room for at least `len` bytes (and [`READ_CHUNK`]): a kept one when
/// this thread has one whose allocation is free again — no body chunk cut from it is still
/// alive — and not oversized.
pub(crate) fn take(len: usize) -> BytesMut {
    let want = READ_CHUNK.max(len);
    if let Some(mut buf) = SPARE.with(|spare| spare.borrow_mut().pop())
        && buf.try_reclaim(want)
        && buf.capacity() <= MAX_KEPT_CAPACITY
    {
        return buf;
    }
    BytesMut::with_capacity(want)
}

/// Gives up an empty read buffer for this thread's next read (a body chunk cut from it may
/// still be on its way out: whether its room can be had back is checked when it is taken);
/// freed when it holds bytes or the thread keeps enough already.
pub(crate) fn give_back(buf: BytesMut) {
    if !buf.is_empty() {
        return;
    }
    keep(&SPARE, buf);
}

/// Adds `item` to this thread's list unless it holds [`KEPT_PER_THREAD`] already.
fn keep<T>(list: &'static LocalKey<RefCell<Vec<T>>>, item: T) {
    list.with(|list| {
        let mut list = list.borrow_mut();
        if list.len() < KEPT_PER_THREAD {
            list.push(item);
        }
    });
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes};

    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_on_this_thread() {
        let buf = take(10);
        let address = buf.as_ptr();
        give_back(buf);
        let again = take(10);
        assert_eq!(
            again.as_ptr(),
            address,
            "the same allocation, not a new one"
        );
        assert!(again.is_empty());
        assert!(again.capacity() >= READ_CHUNK);
    }

    #[test]
    fn a_buffer_is_reused_once_the_body_chunk_cut_from_it_is_gone() {
        SPARE.with(|spare| spare.borrow_mut().clear());
        let mut buf = take(10);
        let address = buf.as_ptr();
        buf.put_slice(b"chunk");
        let chunk: Bytes = buf.split_to(5).freeze();
        give_back(buf);
        // The chunk is still being written: its buffer cannot be had back, a new one is made.
        let fresh = take(10);
        assert_ne!(fresh.as_ptr(), address);
        drop(fresh);

        let mut buf = take(10);
        let address = buf.as_ptr();
        buf.put_slice(b"chunk");
        let chunk2: Bytes = buf.split_to(5).freeze();
        give_back(buf);
        drop((chunk, chunk2));
        // Both chunks gone: the allocation is whole again and reused from its start.
        let again = take(10);
        assert_eq!(again.as_ptr(), address);
        assert!(again.capacity() >= READ_CHUNK);
    }

    #[test]
    fn a_written_heads_map_comes_back_empty_with_its_room() {
        MAPS.with(|maps| maps.borrow_mut().clear());
        let mut map = header_map(8);
        map.insert(http::header::HOST, http::HeaderValue::from_static("a"));
        map.append("x-a", http::HeaderValue::from_static("1"));
        map.append("x-a", http::HeaderValue::from_static("2"));
        let room = map.capacity();
        give_back_header_map(map);
        let again = header_map(8);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(again.capacity(), room, "the kept allocation, not a new one");
        assert!(again.get("x-a").is_none() && again.get(http::header::HOST).is_none());

        let mut huge = HeaderMap::with_capacity(4 * MAX_KEPT_FIELDS);
        huge.insert(http::header::HOST, http::HeaderValue::from_static("a"));
        give_back_header_map(huge);
        assert_eq!(
            MAPS.with(|maps| maps.borrow().len()),
            0,
            "an oversized map is freed"
        );
    }

    #[test]
    fn buffers_holding_bytes_are_not_kept() {
        SPARE.with(|spare| spare.borrow_mut().clear());
        let mut holding = take(10);
        holding.put_slice(b"pipelined");
        give_back(holding);
        assert_eq!(SPARE.with(|spare| spare.borrow().len()), 0);
    }

    #[test]
    fn oversized_buffers_are_not_reused_and_the_thread_keeps_a_few() {
        SPARE.with(|spare| spare.borrow_mut().clear());
        give_back(BytesMut::with_capacity(4 * READ_CHUNK));
        let taken = take(10);
        assert!(
            taken.capacity() <= MAX_KEPT_CAPACITY,
            "a new buffer, not the oversized one"
        );
        assert_eq!(
            SPARE.with(|spare| spare.borrow().len()),
            0,
            "the oversized one is freed"
        );
        for _ in 0..KEPT_PER_THREAD + 3 {
            give_back(BytesMut::with_capacity(READ_CHUNK));
        }
        assert_eq!(SPARE.with(|spare| spare.borrow().len()), KEPT_PER_THREAD);
    }
}
