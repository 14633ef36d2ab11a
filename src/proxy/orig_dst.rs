//! The original destination of a connection that iptables `REDIRECT`ed to stitch.
//!
//! `REDIRECT` rewrites the destination to stitch's listener; the kernel's conntrack keeps the
//! address the client really dialled, readable with `SO_ORIGINAL_DST` (IPv4) or
//! `IP6T_SO_ORIGINAL_DST` (IPv6). socket2 wraps both getsockopts, so this needs no `unsafe`.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;

/// The destination the client dialled, or `None` when the connection was not redirected (it
/// was addressed to stitch's listener itself: explicit mode).
///
/// The socket option is chosen by the family of the *local* address; an IPv4 client on a
/// dual-stack listener shows up as an IPv4-mapped IPv6 address and still needs the IPv4 option.
pub(crate) fn original_dst<S>(socket: &S, local: SocketAddr) -> Option<SocketAddr>
where
    S: std::os::fd::AsFd,
{
    let sock = SockRef::from(socket);
    let looked_up = if is_ipv4(local) {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    let dst = match looked_up {
        Ok(addr) => addr.as_socket()?,
        // ENOENT (no conntrack entry) or ENOPROTOOPT (no netfilter): not redirected.
        Err(e) => {
            log_lookup_error(&e);
            return None;
        }
    };
    (normalize(dst) != normalize(local)).then(|| normalize(dst))
}

fn log_lookup_error(e: &io::Error) {
    tracing::trace!(error = %e, "no original destination; treating the connection as explicit");
}

fn is_ipv4(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    }
}

/// Folds IPv4-mapped IPv6 addresses to plain IPv4 so comparisons and logs agree.
pub(crate) fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_direct_connection_has_no_original_destination() {
        // Without a REDIRECT rule the kernel either has no conntrack entry (error) or reports
        // the listener itself; both must read as "not redirected".
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let local = server.local_addr().unwrap();
        assert_eq!(original_dst(&server, local), None);
    }

    #[tokio::test]
    async fn ipv6_sockets_use_the_ipv6_option_without_error() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            eprintln!("skipped: this kernel has no IPv6 loopback");
            return;
        };
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(original_dst(&server, server.local_addr().unwrap()), None);
    }

    #[test]
    fn ipv4_mapped_addresses_fold_to_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(
            normalize(mapped),
            "10.1.2.3:80".parse::<SocketAddr>().unwrap()
        );
        assert!(is_ipv4(mapped));
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(normalize(v6), v6);
        assert!(!is_ipv4(v6));
    }
}
