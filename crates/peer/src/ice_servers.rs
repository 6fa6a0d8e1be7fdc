//! The `iceServers` of `joined`, read for a native peer: which TURN server to
//! allocate a relay on (UDP only: str0m and our socket speak UDP) and with
//! which credentials. Host names are left for the IO layer to resolve.

use crate::wire::IceServer;

/// A TURN server reachable over UDP, before name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnEndpoint {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
}

/// A STUN server (no credentials), before name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunEndpoint {
    pub host: String,
    pub port: u16,
}

/// The first `turn:` URL over UDP that has credentials.
#[must_use]
pub fn first_udp_turn(servers: &[IceServer]) -> Option<TurnEndpoint> {
    servers.iter().find_map(|server| {
        let username = server.username.clone()?;
        let password = server.credential.clone()?;
        server.urls.iter().find_map(|url| {
            let parsed = parse_url(url)?;
            (parsed.scheme == Scheme::Turn && parsed.udp).then(|| TurnEndpoint {
                host: parsed.host,
                port: parsed.port,
                username: username.clone(),
                password: password.clone(),
            })
        })
    })
}

/// Every `stun:` URL.
#[must_use]
pub fn stun_servers(servers: &[IceServer]) -> Vec<StunEndpoint> {
    servers
        .iter()
        .flat_map(|server| server.urls.iter().map(String::as_str))
        .filter_map(parse_url)
        .filter(|url| url.scheme == Scheme::Stun)
        .map(|url| StunEndpoint {
            host: url.host,
            port: url.port,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Stun,
    Turn,
    /// `stuns:`/`turns:` (TLS): not used by the native peer.
    Secure,
}

#[derive(Debug)]
struct ParsedUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    udp: bool,
}

/// RFC 7064/7065: `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]`.
fn parse_url(url: &str) -> Option<ParsedUrl> {
    let (scheme, rest) = url.split_once(':')?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "stun" => Scheme::Stun,
        "turn" => Scheme::Turn,
        "stuns" | "turns" => Scheme::Secure,
        _ => return None,
    };
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    let udp = match query {
        None => true,
        Some(query) => query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| key.eq_ignore_ascii_case("transport"))
            .is_none_or(|(_, value)| value.eq_ignore_ascii_case("udp")),
    };
    let default_port = if scheme == Scheme::Secure { 5349 } else { 3478 };
    let (host, port) = split_host_port(authority, default_port)?;
    Some(ParsedUrl {
        scheme,
        host,
        port,
        udp,
    })
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_owned(), port.parse().ok()?)),
        Some(_) => None,
        None if authority.is_empty() => None,
        None => Some((authority.to_owned(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(urls: &[&str], credentials: bool) -> IceServer {
        IceServer {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            username: credentials.then(|| "user".to_owned()),
            credential: credentials.then(|| "pass".to_owned()),
        }
    }

    #[test]
    fn picks_the_udp_turn_url_of_duet() {
        let servers = [
            server(&["stun:localhost:40000"], false),
            server(
                &[
                    "turn:localhost:40000?transport=tcp",
                    "turn:localhost:40000?transport=udp",
                ],
                true,
            ),
        ];
        assert_eq!(
            first_udp_turn(&servers),
            Some(TurnEndpoint {
                host: "localhost".into(),
                port: 40000,
                username: "user".into(),
                password: "pass".into()
            })
        );
        assert_eq!(
            stun_servers(&servers),
            [StunEndpoint {
                host: "localhost".into(),
                port: 40000
            }]
        );
    }

    #[test]
    fn url_forms() {
        let turn = |url: &str| first_udp_turn(&[server(&[url], true)]);
        assert_eq!(
            turn("turn:[::1]:5000").map(|t| (t.host, t.port)),
            Some(("::1".into(), 5000))
        );
        assert_eq!(turn("turn:example.org").map(|t| t.port), Some(3478));
        assert_eq!(turn("turn:example.org?transport=tcp"), None);
        assert_eq!(turn("turns:example.org"), None);
        assert_eq!(turn("turn:"), None);
        assert_eq!(turn("turn:h:notaport"), None);
        assert_eq!(first_udp_turn(&[server(&["turn:h:1"], false)]), None);
    }
}
