use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;

use super::{AllowIps, Client, Peer, Scheme, MAX_HOPS};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

fn tcp(addr: &str) -> Peer {
    Peer::Tcp(addr.parse::<SocketAddr>().unwrap())
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn client_of(allow: &str, peer: Peer, pairs: &[(&str, &str)]) -> Client {
    allow
        .parse::<AllowIps>()
        .unwrap()
        .client(peer, &headers(pairs))
}

#[test]
fn an_untrusted_peer_cannot_name_itself() {
    let c = client_of(
        "127.0.0.1,::1",
        tcp("198.51.100.9:4000"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    );
    assert_eq!(c.ip, ip("198.51.100.9"));
    assert_eq!(c.scheme, Scheme::Http);
    assert!(!c.forwarded);
}

#[test]
fn a_trusted_proxy_names_the_client_and_scheme() {
    let c = client_of(
        "127.0.0.1,::1",
        tcp("127.0.0.1:4000"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    );
    assert_eq!(c.ip, ip("203.0.113.7"));
    assert_eq!(c.scheme, Scheme::Https);
    assert!(c.forwarded);
    // The same proxy over IPv6, and as a dual-stack socket shows IPv4.
    let c = client_of(
        "127.0.0.1,::1",
        tcp("[::1]:1"),
        &[("x-forwarded-for", "2001:db8::1")],
    );
    assert_eq!(c.ip, ip("2001:db8::1"));
    let c = client_of(
        "127.0.0.1",
        tcp("[::ffff:127.0.0.1]:1"),
        &[("x-forwarded-for", "203.0.113.7")],
    );
    assert_eq!(c.ip, ip("203.0.113.7"));
}

#[test]
fn the_client_is_the_right_most_untrusted_hop() {
    // The client wrote "1.1.1.1" itself; nginx appended what it saw.
    let c = client_of(
        "127.0.0.1,10.0.0.0/8",
        tcp("127.0.0.1:1"),
        &[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.1.2.3")],
    );
    assert_eq!(c.ip, ip("203.0.113.7"));
    // Several header lines are one list, read right to left.
    let c = client_of(
        "127.0.0.1,10.0.0.0/8",
        tcp("127.0.0.1:1"),
        &[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("x-forwarded-for", "10.1.2.3"),
        ],
    );
    assert_eq!(c.ip, ip("203.0.113.7"));
    // Every hop trusted: the left-most is the nearest to the client.
    let c = client_of(
        "127.0.0.1,10.0.0.0/8",
        tcp("127.0.0.1:1"),
        &[("x-forwarded-for", "10.9.9.9, 10.1.2.3")],
    );
    assert_eq!(c.ip, ip("10.9.9.9"));
    // `*` trusts every hop: the left-most.
    let c = client_of(
        "*",
        tcp("192.0.2.1:1"),
        &[("x-forwarded-for", "1.1.1.1, 2.2.2.2")],
    );
    assert_eq!(c.ip, ip("1.1.1.1"));
}

#[test]
fn garbage_and_padding_end_the_walk_at_the_last_address_read() {
    for garbage in ["not-an-ip", "", "999.1.1.1", "unix:/x", "[::1"] {
        let value = format!("{garbage}, 10.1.2.3");
        let c = client_of(
            "127.0.0.1,10.0.0.0/8",
            tcp("127.0.0.1:1"),
            &[("x-forwarded-for", value.as_str())],
        );
        assert_eq!(c.ip, ip("10.1.2.3"), "{value:?}");
    }
    // Garbage right away: the proxy itself.
    let c = client_of(
        "127.0.0.1",
        tcp("127.0.0.1:1"),
        &[("x-forwarded-for", "garbage")],
    );
    assert_eq!(c.ip, ip("127.0.0.1"));
    assert!(!c.forwarded);
    // A thousand trusted hops: the walk stops at MAX_HOPS.
    let padded = vec!["10.0.0.1"; 1000].join(",");
    let c = client_of(
        "10.0.0.0/8,127.0.0.1",
        tcp("127.0.0.1:1"),
        &[("x-forwarded-for", &padded)],
    );
    assert_eq!(c.ip, ip("10.0.0.1"));
    let mut hops: Vec<String> = (0..MAX_HOPS + 5).map(|i| format!("10.0.0.{i}")).collect();
    hops.insert(0, "203.0.113.7".into());
    let c = client_of(
        "10.0.0.0/8,127.0.0.1",
        tcp("127.0.0.1:1"),
        &[("x-forwarded-for", &hops.join(", "))],
    );
    assert_eq!(c.ip, ip(&format!("10.0.0.{}", hops.len() - 1 - MAX_HOPS)));
    // Ports and brackets as some proxies write them.
    for (entry, want) in [
        ("203.0.113.7:5555", "203.0.113.7"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
    ] {
        let c = client_of(
            "127.0.0.1",
            tcp("127.0.0.1:1"),
            &[("x-forwarded-for", entry)],
        );
        assert_eq!(c.ip, ip(want), "{entry}");
    }
}

#[test]
fn a_unix_socket_peer_is_trusted_and_otherwise_anonymous() {
    let c = client_of("", Peer::Unix, &[("x-forwarded-for", "203.0.113.7")]);
    assert_eq!(c.ip, ip("203.0.113.7"));
    let c = client_of("", Peer::Unix, &[]);
    assert_eq!(c.ip, None);
    assert_eq!(c.to_string(), "unix");
    // An empty list trusts no TCP peer.
    let c = client_of(
        "",
        tcp("127.0.0.1:1"),
        &[("x-forwarded-for", "203.0.113.7")],
    );
    assert_eq!(c.ip, ip("127.0.0.1"));
}

#[test]
fn only_http_and_https_are_schemes() {
    for (value, want) in [
        ("https", Some(Scheme::Https)),
        ("HTTPS", Some(Scheme::Https)),
        ("http, https", Some(Scheme::Https)),
        ("https, http", Some(Scheme::Http)),
        ("gopher", None),
        ("", None),
    ] {
        let c = client_of(
            "127.0.0.1",
            tcp("127.0.0.1:1"),
            &[("x-forwarded-proto", value)],
        );
        assert_eq!(c.forwarded, want.is_some(), "{value:?}");
        assert_eq!(c.scheme, want.unwrap_or(Scheme::Http), "{value:?}");
    }
}

#[test]
fn allow_lists_parse_as_gunicorn_writes_them_and_print_back() {
    for (text, shown) in [
        ("127.0.0.1,::1", "127.0.0.1,::1"),
        (" 10.0.0.0/8 , 192.0.2.1 ", "10.0.0.0/8,192.0.2.1"),
        ("*", "*"),
        ("", ""),
    ] {
        let allow: AllowIps = text.parse().unwrap();
        assert_eq!(allow.to_string(), shown);
        assert_eq!(allow.to_string().parse::<AllowIps>().unwrap(), allow);
    }
    assert_eq!(AllowIps::default().to_string(), "127.0.0.1,::1");
    let err = "127.0.0.1,localhost".parse::<AllowIps>().unwrap_err();
    assert!(err.contains("\"localhost\""), "{err}");
    assert!("10.0.0.0/33".parse::<AllowIps>().is_err());
}
