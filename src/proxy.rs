//! Who the client is when a proxy stands in front: `forwarded_allow_ips`
//! (Gunicorn's key and default), the `X-Forwarded-For` walk that finds the
//! client among the hops, `X-Forwarded-Proto`, and the [`Client`] a handler
//! extracts.
//!
//! Headers are believed only from a peer the operator trusts: a proxy on an
//! allowed address, or any peer of a Unix socket (only local processes
//! reach one, and its permissions decide which). From anyone else they are
//! ignored, so a client talking to ferricorn directly cannot name itself.
//! [`protocol`] reads HAProxy's PROXY protocol (`proxy_protocol = true`).

use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts;
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Most `X-Forwarded-For` entries walked: real chains are a few proxies
/// long; a longer list is a client padding it, and the walk stops there.
pub const MAX_HOPS: usize = 32;

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A Unix-domain socket's peer: a local process, which has no address.
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// The scheme the client used, as the proxy said (`X-Forwarded-Proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The client of a request: its address (from a trusted proxy's headers,
/// else the connection's own peer) and scheme. A handler takes it as an
/// argument: `async fn handler(client: Client)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// None only for a Unix-socket peer that named no client.
    pub ip: Option<IpAddr>,
    pub scheme: Scheme,
    /// The connection's own peer (the proxy, when there is one).
    pub peer: Peer,
    /// Whether `ip` or `scheme` came from a proxy's headers.
    pub forwarded: bool,
}

impl std::fmt::Display for Client {
    /// The address as the access log writes it: `unix` for a local peer
    /// that named no client.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip {
            Some(ip) => ip.fmt(f),
            None => f.write_str("unix"),
        }
    }
}

impl Client {
    /// Appends what `Display` writes, faster: an IPv4 address, the usual
    /// case, by hand (`Display` for one costs over 1,000 instructions,
    /// paid per request by `/health` and the access log).
    pub fn push_to(&self, out: &mut String) {
        match self.ip {
            Some(IpAddr::V4(ip)) => {
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(itoa::Buffer::new().format(octet));
                }
            }
            _ => {
                use std::fmt::Write as _;
                let _ = write!(out, "{self}");
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Client, Self::Rejection> {
        // The server inserts one into every request; a router driven some
        // other way (a unit test) gets an anonymous local client.
        Ok(parts.extensions.get::<Client>().copied().unwrap_or(Client {
            ip: None,
            scheme: Scheme::Http,
            peer: Peer::Unix,
            forwarded: false,
        }))
    }
}

/// `forwarded_allow_ips`: the proxies whose headers are believed. Written
/// as Gunicorn does, a comma-separated string (`"127.0.0.1,::1"`, `"*"`
/// for any), or a TOML list; entries are addresses or networks
/// (`10.0.0.0/8`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowIps {
    Any,
    Only(Vec<IpNet>),
}

impl Default for AllowIps {
    fn default() -> Self {
        AllowIps::Only(vec![
            IpNet::from(IpAddr::from([127, 0, 0, 1])),
            IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ])
    }
}

impl AllowIps {
    /// Whether a proxy at `ip` is trusted. An IPv4 peer on a dual-stack
    /// socket (`::ffff:127.0.0.1`) is judged as the IPv4 address it is.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            AllowIps::Any => true,
            AllowIps::Only(nets) => {
                let ip = ip.to_canonical();
                nets.iter().any(|net| net.contains(&ip))
            }
        }
    }

    /// Whether headers from this peer are believed.
    pub fn trusts_peer(&self, peer: Peer) -> bool {
        match peer {
            Peer::Tcp(addr) => self.trusts(addr.ip()),
            Peer::Unix => true,
        }
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: Peer, headers: &HeaderMap) -> Client {
        let own = Client {
            ip: match peer {
                Peer::Tcp(addr) => Some(addr.ip().to_canonical()),
                Peer::Unix => None,
            },
            scheme: Scheme::Http,
            peer,
            forwarded: false,
        };
        if !self.trusts_peer(peer) {
            return own;
        }
        let mut client = own;
        if let Some(ip) = self.forwarded_for(headers) {
            client.ip = Some(ip);
            client.forwarded = true;
        }
        if let Some(scheme) = forwarded_proto(headers) {
            client.scheme = scheme;
            client.forwarded = true;
        }
        client
    }

    /// The client named by `X-Forwarded-For`: walking from the right (the
    /// hop the trusted peer added), the first address that is not a trusted
    /// proxy. Every hop left of it could be written by the client itself,
    /// so none is believed. An entry that is not an address ends the walk at
    /// the last address read (the proxy that passed the garbage on); so
    /// does the [`MAX_HOPS`]th. Several header lines read as one list.
    fn forwarded_for(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let mut last = None;
        let mut walked = 0;
        // Header lines in reverse, each line's entries in reverse.
        for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            let Ok(line) = line.to_str() else {
                return last;
            };
            for entry in line.rsplit(',') {
                walked += 1;
                if walked > MAX_HOPS {
                    return last;
                }
                let Some(ip) = parse_hop(entry.trim()) else {
                    return last;
                };
                last = Some(ip);
                if !self.trusts(ip) {
                    return last;
                }
            }
        }
        last
    }
}

/// One `X-Forwarded-For` entry: an address, with a port or IPv6 brackets
/// as some proxies write it.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// `X-Forwarded-Proto`: `https` or `http` (a list's right-most entry, the
/// nearest proxy's); anything else is ignored.
// Names built once: looking a header up by `&str` parses the name on every
// request (about 250 instructions each).
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn forwarded_proto(headers: &HeaderMap) -> Option<Scheme> {
    let value: &HeaderValue = headers.get_all(&X_FORWARDED_PROTO).iter().next_back()?;
    let last = value.to_str().ok()?.rsplit(',').next()?.trim();
    if last.eq_ignore_ascii_case("https") || last.eq_ignore_ascii_case("wss") {
        Some(Scheme::Https)
    } else if last.eq_ignore_ascii_case("http") || last.eq_ignore_ascii_case("ws") {
        Some(Scheme::Http)
    } else {
        None
    }
}

impl std::str::FromStr for AllowIps {
    type Err = String;
    fn from_str(s: &str) -> Result<AllowIps, String> {
        let entries: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        AllowIps::from_entries(&entries)
    }
}

impl AllowIps {
    fn from_entries(entries: &[&str]) -> Result<AllowIps, String> {
        if entries.contains(&"*") {
            return Ok(AllowIps::Any);
        }
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("{entry:?} is not an address or network (like 10.0.0.0/8), nor \"*\"")
                })?;
            nets.push(net);
        }
        Ok(AllowIps::Only(nets))
    }
}

impl std::fmt::Display for AllowIps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowIps::Any => f.write_str("*"),
            AllowIps::Only(nets) => {
                for (i, net) in nets.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    // A single address is written as one, not as a /32.
                    if net.prefix_len() == net.max_prefix_len() {
                        net.addr().fmt(f)?;
                    } else {
                        net.fmt(f)?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl Serialize for AllowIps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllowIps {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Raw::List(list) => {
                let entries: Vec<&str> = list.iter().map(|e| e.trim()).collect();
                AllowIps::from_entries(&entries).map_err(serde::de::Error::custom)
            }
        }
    }
}

pub mod protocol;
#[cfg(test)]
mod tests;
