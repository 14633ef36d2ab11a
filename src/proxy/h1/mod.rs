//! stitch's own HTTP/1 engine, on the data path on both sides (hyper stays for HTTP/2): the
//! sans-IO codec ([`head`], [`framing`], [`chunked`]: no sockets, no tokio, functions and
//! state machines over bytes); the client-facing connection driver ([`server`], which
//! `proxy::http::server` serves every HTTP/1 client connection with); the upstream connection
//! driver ([`client`], whose connections `proxy::http::pool` keeps).
//!
//! # The server driver
//!
//! [`server::serve`] serves one accepted connection with a `tower::Service<Request<Incoming>>`
//! answering `Response<B: Body<Data = Bytes>>`:
//!
//! - [`incoming::Incoming`], the request body, reads straight from the connection's read half
//!   (Content-Length, chunked with trailers; close-delimited for the client driver's
//!   responses) and hands the read side back to the driver when it is finished or dropped,
//!   with any pipelined bytes; a body dropped before its end (and not already buffered)
//!   closes the connection after the response.
//! - [`response::ResponseWriter`] writes the head with the codec's writer (the response's
//!   [`head::HeaderCase`] and [`ext::ReasonPhrase`] extensions keep spellings and the reason)
//!   and frames the body as hyper did (see that module).
//! - Requests carry their [`head::HeaderCase`] as an extension, and an [`ext::OnUpgrade`] when
//!   they may switch protocols or are `CONNECT`: after a `101` (or a 2xx to `CONNECT`) the
//!   socket and the bytes read past the head go to it as an [`ext::Upgraded`].
//! - Refusals (`400`/`414`/`431`, then close) come back as [`error::Error`], whose
//!   [`error::Error::rejection`] is the `stitch_requests_rejected_total` reason, if any.
//! - Between requests a connection holds no read or write buffer (the read buffer goes to a
//!   per-thread spare list for the next read, `spare`); timeouts, shutdown and the
//!   connection cap's idle close are described in [`server`].
//!
//! While the service answers, the driver keeps reading (up to `--max-header-bytes` of
//! pipelined bytes): a client that closes the connection with nothing pipelined abandons the
//! exchange ([`error::Error::ClientClosed`]: the service's future is dropped), as hyper did
//! without half-close support. The wiring passes detection's prefix to `serve` (counted in
//! the lease once, there), the accept time plus `--header-read-timeout` as the first head's
//! deadline, and the metrics framing refusals are counted in (before the `400` is written).
//!
//! # The client driver
//!
//! [`client::Connection`] is one upstream connection, built from a stream already split;
//! idle, it is the two halves and no buffer. [`client::Connection::send`] writes a request
//! (head through [`head::write_request_head`] with the request's [`head::HeaderCase`]; body
//! framed as hyper's client framed it, [`client::plan`], by the same
//! [`response::WriteBody`] the server side writes responses with) while reading the
//! response head (full duplex: an early `413` is delivered while the body is still being
//! sent, the rest of which then goes out on a task of its own). It answers a
//! [`client::Exchange`]: the response with an [`incoming::Incoming`] body reading from the
//! upstream and the [`head::HeaderCase`] / [`ext::ReasonPhrase`] extensions; a
//! [`client::Reuse`] whose non-blocking `reclaim` gives the connection back once the body
//! was read to its end (keep-alive, request fully written, nothing extra received); and,
//! after a `101` or a 2xx to `CONNECT`, the socket as an [`ext::Upgraded`]. Interim `1xx`
//! responses are skipped. [`client::SendError`] tells a request that was not written at all
//! (given back, to retry elsewhere) from a broken upstream (socket, head, framing) and from
//! the request body's own failure (its error as `source()`: the client's fault, `400`).
//!
//! `proxy::http::pool` keeps idle `Connection`s per target (checked with `is_reusable()` at
//! checkout and by the reaper), holds the `Reuse` in its `Checkin` until the response body is
//! dropped (then pushes `reclaim()`'s connection back, or stops a request body writer still
//! running), resends a `SendError::Unsent` request on another connection, and maps
//! `SendError::Body` to the request body's error (`400` when malformed). There is no timeout
//! inside the driver (nor was there in hyper's client).
//!
//! # Why not hyper
//!
//! hyper's HTTP/1 engine bounded two open issues. CPU (issue 13): with header-case
//! preservation hyper keeps a second `HeaderMap` of original spellings per message, and a
//! bare hyper proxy is already 1.13× nginx per request. Memory (issue 15): hyper keeps an
//! 8 KiB read and an 8 KiB write buffer per connection for its whole life (~16 KiB RSS per
//! idle keep-alive connection; nginx < 1.5 KiB), and its client adds a 12 KiB request channel
//! per upstream connection (ARCHITECTURE.md, "What a connection costs").
//!
//! # Buffers and ownership
//!
//! The codec owns no buffer between calls, so a driver can free (or never allocate) one
//! while a connection is idle:
//!
//! - [`head`]: `parse_request` / `parse_response` take the bytes received so far (`&[u8]`)
//!   and either ask for more or return the head and how many bytes it took. The complete
//!   head is copied **once** into a `Bytes`; the target (`Uri`), every `HeaderValue` and the
//!   original name spellings ([`head::HeaderCase`]) are slices of that copy. The only other
//!   allocations are the `HeaderMap`'s tables, the spellings' position list and, per field
//!   with a non-standard name, its lower-cased `HeaderName` (`http` cannot borrow a name).
//!   httparse's field slots are on the stack for up to 128 fields. The driver drops the
//!   parsed bytes from its read buffer and, once the exchange is over, the head. Parsing
//!   starts over on each call, so a driver should call again only when a read brought a
//!   `\n` (a head trickled byte by byte would otherwise cost quadratic time within
//!   `--max-header-bytes`).
//! - [`chunked`]: the decoder takes the driver's `BytesMut` and splits data off its front
//!   (`split_to().freeze()`, no copy), so a body streams in the pieces it was read in.
//! - Writers append to a caller's `Vec<u8>` (a driver reuses one per connection, or one per
//!   worker); no formatting machinery, no allocation of their own.
//!
//! # Strictness
//!
//! Every byte is treated as hostile, and nothing here panics on any input (`props` feeds
//! arbitrary bytes). Heads follow RFC 9112 through httparse's strict defaults (no obs-fold,
//! no whitespace before a colon, `HTTP/1.0` and `HTTP/1.1` only, bare LF line endings
//! accepted as §2.2 allows); request-target forms are checked per method; framing
//! ([`framing`]) refuses every ambiguous request length; chunked framing is CRLF-only and
//! bounded.
//!
//! # What the existing tests pin (the drivers reproduce it)
//!
//! The integration tests were written against hyper and pass unchanged on this engine. These
//! are the behaviours they rely on, and which part of this codec (or the driver) provides
//! each:
//!
//! - Parse errors get a response, then the connection closes: `400` for a malformed request
//!   line or field (`tests/it/limits.rs` `malformed_request_head_gets_400`: a line without a
//!   colon, a space in a name, `Content-Length: -1`, `Transfer-Encoding: gzip`), `431` for
//!   too many fields or a head over `--max-header-bytes` (`too_many_header_fields_are_refused`,
//!   `header_larger_than_the_limit_is_refused` accept 400 or 431), `414` for a target over
//!   64 KiB. [`head::HeadError::status`] and [`framing::FramingError`] give the status; the
//!   response must be readable by `tests/support/wire.rs` (hyper wrote the status line and a
//!   zero-length body, no `Date`).
//! - stitch's own refusals (`proxy::http::validate`) answer `400` with `Connection: close`
//!   and count `stitch_requests_rejected_total{reason}` (`tests/it/validation.rs`);
//!   [`framing::FramingError::rejection`] maps framing errors to those reasons. hyper refused
//!   conflicting `Content-Length`s itself (uncounted); `validate` still refuses two `Host`
//!   fields, a 1.1 request without `Host`, and `chunked` twice.
//! - `Content-Length` with `Transfer-Encoding`: hyper dropped the `Content-Length`, read the
//!   body chunked and closed the connection after the response (so stitch's
//!   `ambiguous_framing` check never saw it on HTTP/1). [`framing::request_body`] refuses it
//!   instead; `content_length_with_transfer_encoding_is_never_forwarded_ambiguously` accepts
//!   either a `400` then close, or `200` then close.
//! - A chunked body broken from its first bytes (`fffffffffffffffff1`, 17 digits) is refused
//!   `400 malformed_body` before anything reaches the app; the driver must hold the head
//!   until the first chunk decodes (what `FIRST_FRAME_WINDOW` does today). Chunk extensions
//!   (`1;ext=1`) are accepted and dropped (`chunked_request_body_reaches_upstream_intact`).
//! - Bare-LF heads are accepted and forwarded with CRLF
//!   (`bare_lf_line_endings_reach_the_app_as_crlf`): the writers always write CRLF.
//! - Header name case and per-name value order reach the peer unchanged, both directions
//!   (`tests/it/transparency.rs`, with `X-Empty:` empty values and obs-text `0xE9` values);
//!   [`head::write_request_head`] / [`head::write_response_head`] with the parsed
//!   [`head::HeaderCase`] do this. The target is forwarded byte for byte
//!   (`request_target_and_query_are_forwarded_byte_for_byte`), as is `OPTIONS *` and any
//!   token method (`M-SEARCH_X.1`). A response's reason phrase is forwarded as received
//!   ([`head::ResponseHead::reason`]; hyper lost one with obs-text).
//! - No header is added: no `Date` (hyper's `auto_date_header(false)`), no `Via`. Towards the
//!   client, a response body of unknown length is sent chunked to an HTTP/1.1 client and
//!   close-delimited (no chunked) to an HTTP/1.0 one
//!   (`http10_client_gets_a_complete_response_and_a_close`); a response with a length keeps `Content-Length` (HEAD keeps the GET's).
//! - Responses to HEAD and 1xx/204/304 have no body and the connection stays usable
//!   (`head_response_has_no_body_and_connection_stays_usable`,
//!   `status_204_and_304_have_no_body`): [`framing::response_body`].
//! - `Expect: 100-continue`: the client gets `100 Continue` before it sends the body
//!   (`expect_100_continue_gets_interim_response_before_the_body`); hyper wrote it when the
//!   body was first read. [`framing::expects_continue`].
//! - HTTP/1.0 without `keep-alive`, and `Connection: close`, end the connection after the
//!   response ([`framing::keep_alive`]); HTTP/1.1 keep-alive serves several requests on one
//!   client and one pooled upstream connection
//!   (`keep_alive_two_requests_share_one_client_and_one_upstream_connection`).
//! - `CONNECT host:port` answered `200` becomes a tunnel; `Upgrade` + `101` becomes a byte
//!   tunnel (WebSocket test). A 2xx to CONNECT has no body ([`framing::response_body`]).
//! - Absolute-form targets reach the upstream in origin-form with `Host` set
//!   (`outbound_absolute_form_request_goes_to_the_named_host`; done in `forward`, kept).
//! - Garbage never takes stitch down and every garbage connection ends
//!   (`garbage_and_mangled_requests_never_take_stitch_down`).
//!
//! Where this codec is stricter than hyper was (no existing test sends these): a `#` in the
//! target is refused (hyper cut the fragment off silently), `CONNECT` needs `host:port`
//! (`Target::parse_authority` filled in a default port), the request-target form must fit the
//! method (`GET *` and `GET host:80` are refused), whitespace after a chunk size is only
//! allowed before an extension, and `Content-Length: 5, 5` is read as 5 in requests (hyper's
//! server refused any list there, its client accepted it).

pub(crate) mod chunked;
pub(crate) mod client;
pub(crate) mod error;
pub(crate) mod ext;
pub(crate) mod framing;
pub(crate) mod head;
pub(crate) mod incoming;
pub(crate) mod response;
pub(crate) mod server;
mod spare;

#[cfg(test)]
mod chunked_tests;
#[cfg(test)]
mod client_edge_tests;
#[cfg(test)]
mod client_props;
#[cfg(test)]
mod client_test_support;
#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod framing_tests;
#[cfg(test)]
mod head_tests;
#[cfg(test)]
mod incoming_tests;
#[cfg(test)]
mod props;
#[cfg(test)]
mod response_tests;
#[cfg(test)]
mod server_edge_tests;
#[cfg(test)]
mod server_test_support;
#[cfg(test)]
mod server_tests;
