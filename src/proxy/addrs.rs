//! Where a connection or request goes, kept apart from plain `SocketAddr`s so the original
//! destination, an explicit target and a name from a `Host` header cannot be mixed up.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use super::error::ForwardError;

/// An upstream to connect to: a resolved address (transparent mode) or a `host:port` name
/// (explicit mode; resolved at connect time). Also the key of the upstream pools.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// The original destination of a redirected connection.
    Addr(SocketAddr),
    /// A `host:port` from `--inbound-target`, an absolute-form URI, `Host` or `:authority`.
    Name {
        /// Host name or IP literal (IPv6 without brackets), lower case.
        host: Box<str>,
        /// Port (80 when the authority had none).
        port: u16,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => addr.fmt(f),
            Target::Name { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Target {
    /// Parses `host`, `host:port`, `[v6]:port` or `ip:port`; `default_port` fills a missing port.
    pub(crate) fn parse_authority(authority: &str, default_port: u16) -> Option<Target> {
        let authority = authority.trim();
        if authority.is_empty() || authority.contains(['/', '@', ' ']) {
            return None;
        }
        if let Ok(addr) = authority.parse::<SocketAddr>() {
            return Some(Target::Addr(addr));
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            host.parse::<std::net::Ipv6Addr>().ok()?;
            match after {
                "" => (host, default_port),
                p => (host, p.strip_prefix(':')?.parse().ok()?),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().ok()?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Target::Addr(SocketAddr::new(ip, port)));
        }
        Some(Target::Name {
            host: host.to_ascii_lowercase().into(),
            port,
        })
    }

    /// The port the target listens on.
    pub(crate) fn port(&self) -> u16 {
        match self {
            Target::Addr(a) => a.port(),
            Target::Name { port, .. } => *port,
        }
    }

    /// Resolves and connects within `timeout`, refusing any address that is stitch itself.
    pub(crate) async fn connect(
        &self,
        own: &OwnAddrs,
        timeout: Duration,
    ) -> Result<TcpStream, ForwardError> {
        let attempt = async {
            let addrs: Vec<SocketAddr> = match self {
                Target::Addr(a) => vec![*a],
                Target::Name { host, port } => tokio::net::lookup_host((&**host, *port))
                    .await
                    .map_err(ForwardError::resolve)?
                    .collect(),
            };
            let mut last = None;
            for addr in addrs {
                if own.is_self(addr) {
                    return Err(ForwardError::forwarding_loop(addr));
                }
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(ForwardError::connect(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no address")
            })))
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(ForwardError::connect_timeout(timeout)))
    }
}

/// stitch's own listening addresses: a destination among them would make stitch forward to
/// itself forever (a mis-set iptables rule, or an app calling the outbound port directly).
#[derive(Debug, Clone, Default)]
pub(crate) struct OwnAddrs(Vec<SocketAddr>);

impl OwnAddrs {
    /// Wraps the bound listener addresses.
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Self {
        OwnAddrs(addrs.into_iter().map(super::orig_dst::normalize).collect())
    }

    /// Whether `dst` reaches one of stitch's listeners. A listener on an unspecified address
    /// (`0.0.0.0`, `[::]`) is reached through any local address; loopback always counts.
    pub(crate) fn is_self(&self, dst: SocketAddr) -> bool {
        let dst = super::orig_dst::normalize(dst);
        self.0.iter().any(|own| {
            own.port() == dst.port()
                && (own.ip() == dst.ip()
                    || dst.ip().is_loopback() && own.ip().is_loopback()
                    || own.ip().is_unspecified()
                        && (dst.ip().is_loopback() || dst.ip().is_unspecified()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_parse_into_targets() {
        let cases: &[(&str, Option<Target>)] = &[
            (
                "example.com",
                Some(Target::Name {
                    host: "example.com".into(),
                    port: 80,
                }),
            ),
            (
                "Example.COM:8080",
                Some(Target::Name {
                    host: "example.com".into(),
                    port: 8080,
                }),
            ),
            (
                "127.0.0.1:9",
                Some(Target::Addr("127.0.0.1:9".parse().unwrap())),
            ),
            (
                "10.0.0.1",
                Some(Target::Addr("10.0.0.1:80".parse().unwrap())),
            ),
            (
                "[::1]:443",
                Some(Target::Addr("[::1]:443".parse().unwrap())),
            ),
            ("[::1]", Some(Target::Addr("[::1]:80".parse().unwrap()))),
            ("", None),
            (":80", None),
            ("host:notaport", None),
            ("host:99999", None),
            ("user@host", None),
            ("[nonsense]:1", None),
        ];
        for (input, want) in cases {
            assert_eq!(&Target::parse_authority(input, 80), want, "{input}");
        }
    }

    #[test]
    fn own_addresses_are_recognized_in_every_spelling() {
        let own = OwnAddrs::new(vec![
            "127.0.0.1:4140".parse().unwrap(),
            "[::]:4143".parse().unwrap(),
        ]);
        assert!(own.is_self("127.0.0.1:4140".parse().unwrap()));
        assert!(
            own.is_self("127.0.0.2:4140".parse().unwrap()),
            "all of 127/8 is loopback"
        );
        assert!(own.is_self("[::ffff:127.0.0.1]:4140".parse().unwrap()));
        assert!(
            own.is_self("127.0.0.1:4143".parse().unwrap()),
            "unspecified listener answers loopback"
        );
        assert!(!own.is_self("127.0.0.1:8080".parse().unwrap()));
        assert!(!own.is_self("192.0.2.7:4140".parse().unwrap()));
    }
}
