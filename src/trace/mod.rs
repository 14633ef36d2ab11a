//! The trace layer: a tower `Layer` between the HTTP server and the forwarding client.
