//! The buyer's address: the peer's, or, when the peer is a trusted proxy
//! (`FLASHSALE_TRUSTED_PROXIES`), the one that proxy says it forwarded for.
//!
//! `X-Forwarded-For` is read right to left: each trusted proxy appended the address it
//! took the request from, so the first address from the right that is not a trusted
//! proxy is the client's. Anything left of it was sent by the client and proves nothing.
//! `Forwarded` (RFC 7239) is read the same way when there is no `X-Forwarded-For`.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The client's address for limits and consent records, as text (None: unknown, e.g.
/// over a Unix socket).
pub fn client_addr(req: &HttpRequest, trusted: &[IpNet]) -> Option<String> {
    let peer = req.peer_addr()?.ip();
    Some(resolve(peer, forwarded_chain(req), trusted).to_string())
}

/// The client: `peer`, unless it is trusted, then walk `chain` (nearest hop last).
fn resolve(peer: IpAddr, chain: Vec<IpAddr>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in chain.into_iter().rev() {
        client = hop;
        if !is_trusted(&hop) {
            break;
        }
    }
    client
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The hops the proxies recorded, farthest first; unparsable entries end the chain
/// there (what is left of them cannot be believed either).
fn forwarded_chain(req: &HttpRequest) -> Vec<IpAddr> {
    let headers = req.headers();
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let hops: Vec<String> = if !xff.is_empty() {
        xff.iter().map(|s| (*s).to_owned()).collect()
    } else {
        headers
            .get_all("forwarded")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(forwarded_for)
            .collect()
    };
    let mut chain = Vec::new();
    // Keep only the believable suffix: parse from the right, stop at the first junk.
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => chain.push(canonical(ip)),
            None => break,
        }
    }
    chain.reverse();
    chain
}

/// The `for=` of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<String> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]`, `[::1]:5678`, `::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, _port) = hop.rsplit_once(':')?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_peers_are_believed_right_to_left() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        // Untrusted peer: its header is ignored.
        assert_eq!(
            resolve(ip("203.0.113.9"), vec![ip("1.1.1.1")], &trusted),
            ip("203.0.113.9")
        );
        // Trusted peer: the rightmost untrusted hop; a forged left part is skipped.
        let chain = vec![ip("6.6.6.6"), ip("198.51.100.7"), ip("10.1.2.3")];
        assert_eq!(resolve(ip("10.0.0.1"), chain, &trusted), ip("198.51.100.7"));
        // No header from a trusted peer: the peer.
        assert_eq!(resolve(ip("::1"), vec![], &trusted), ip("::1"));
        // Mapped IPv4 matches the IPv4 net.
        assert_eq!(canonical(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(parse_hop("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("192.0.2.60:8080"), Some(ip("192.0.2.60")));
        assert_eq!(parse_hop("unknown"), None);
        assert_eq!(
            forwarded_for(r#"for="[2001:db8::1]:80";proto=https"#).as_deref(),
            Some("[2001:db8::1]:80")
        );
    }
}
