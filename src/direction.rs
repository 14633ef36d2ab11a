//! Which side of the app a connection is on. A leaf: the proxy labels connections with it,
//! the rules match on it, the engine decides parents by it and the metrics count by it, so it
//! imports nothing of stitch's.

/// Which side of the app a connection is on; the trace layer opens a SERVER span inbound and a
/// CLIENT span outbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A peer calling the app.
    Inbound,
    /// The app calling a peer.
    Outbound,
}

impl Direction {
    /// The lower-case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
