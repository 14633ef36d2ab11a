//! HTTP/1 and HTTP/2 serving and forwarding.
//!
//! The stack per connection, outermost first: the server connection (stitch's own HTTP/1
//! engine, `proxy::h1`; hyper's HTTP/2) → the trace layer
//! (propagation and spans) → `forward::Forward` (routing, hop-by-hop headers, pooled upstream
//! client, errors as responses). The protocol is kept end to end: an HTTP/1 client is
//! forwarded over HTTP/1, an h2c/gRPC client over HTTP/2.

pub(crate) mod body;
pub(crate) mod forward;
pub mod headers;
pub(crate) mod pool;
pub(crate) mod request_body;
pub(crate) mod server;
pub(crate) mod validate;
