//! HAProxy's PROXY protocol (v1 text and v2 binary, parsed by the `ppp`
//! crate), for `proxy_protocol = true`: every connection must open with a
//! header naming the client, which a load balancer in TCP mode sends in
//! place of `X-Forwarded-For`. A connection without one, or with a
//! malformed one, is answered 400 and closed; the addresses are believed
//! only from a peer in `forwarded_allow_ips`, as the headers are.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::PartialResult;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest header read: v1 is at most 107 bytes, v2 is 16 plus its
/// addresses and TLVs, which HAProxy keeps far below this.
pub const MAX_HEADER: usize = 4096;

/// The body of the 400 a connection without a header gets.
pub const REFUSAL: &str = "missing or malformed PROXY protocol header\n";

/// What a connection's first bytes said.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes; `source` is the client it names
    /// (none for `LOCAL`, `UNKNOWN` or a Unix address: the connection's
    /// own peer stands).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not yet a whole header.
    Incomplete,
    /// Not a header: why.
    Invalid(String),
}

/// Parses the start of a connection.
pub fn parse(bytes: &[u8]) -> Parsed {
    let result = ppp::HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return if bytes.len() >= MAX_HEADER {
            Parsed::Invalid(format!("no PROXY header within {MAX_HEADER} bytes"))
        } else {
            Parsed::Incomplete
        };
    }
    match result {
        ppp::HeaderResult::V1(Ok(header)) => Parsed::Header {
            len: header.header.len(),
            source: match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                ppp::v1::Addresses::Unknown => None,
            },
        },
        ppp::HeaderResult::V2(Ok(header)) => Parsed::Header {
            len: header.len(),
            source: match (header.command, header.addresses) {
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    Some((a.source_address, a.source_port).into())
                }
                _ => None,
            },
        },
        ppp::HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("not a PROXY header ({e})")),
        ppp::HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("not a PROXY header ({e})")),
    }
}

/// Reads a connection's PROXY header within `patience`: the client it
/// names, and the bytes read past the header (the start of the first
/// request), which go to HTTP as if not yet read.
///
/// # Errors
/// No header, a malformed one, or none in time: said for the log, after
/// a 400 was sent and the connection may close.
pub async fn read_header<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    patience: Duration,
) -> Result<(Option<SocketAddr>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(256);
    let read = async {
        loop {
            match parse(&buf) {
                Parsed::Header { len, source } => return Ok((source, buf.split_off(len))),
                Parsed::Invalid(why) => return Err(why),
                Parsed::Incomplete => {}
            }
            let mut chunk = [0u8; 512];
            let want = chunk.len().min(MAX_HEADER - buf.len()).max(1);
            match stream.read(&mut chunk[..want]).await {
                Ok(0) => return Err("closed before a PROXY header".to_owned()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("reading the PROXY header: {e}")),
            }
        }
    };
    let outcome = match tokio::time::timeout(patience, read).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "no PROXY header within {} s",
            patience.as_secs_f64()
        )),
    };
    if outcome.is_err() {
        // A client that spoke HTTP straight away gets an answer it can
        // read, not a reset.
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{REFUSAL}",
            REFUSAL.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn v1_and_v2_name_the_client() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(v1),
            Parsed::Header {
                len: 41,
                source: Some("203.0.113.7:5555".parse().unwrap())
            }
        );
        let v1 = b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n";
        assert!(
            matches!(parse(v1), Parsed::Header { source: Some(s), .. } if s.ip().to_string() == "2001:db8::7")
        );
        let mut addresses = vec![203, 0, 113, 7, 10, 0, 0, 1];
        addresses.extend_from_slice(&5555u16.to_be_bytes());
        addresses.extend_from_slice(&80u16.to_be_bytes());
        let mut bytes = v2(1, 0x11, &addresses);
        let len = bytes.len();
        bytes.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&bytes),
            Parsed::Header {
                len,
                source: Some("203.0.113.7:5555".parse().unwrap())
            }
        );
        // LOCAL (a health check of the balancer's own) and UNKNOWN: the
        // connection's own peer stands.
        assert!(matches!(
            parse(&v2(0, 0, &[])),
            Parsed::Header { source: None, .. }
        ));
        assert!(matches!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        ));
    }

    #[test]
    fn partial_headers_wait_and_anything_else_is_refused() {
        for partial in [&b"PRO"[..], b"PROXY TCP4 203.0.113.7", b"\r\n\r\n\0\r\nQU"] {
            assert_eq!(parse(partial), Parsed::Incomplete, "{partial:?}");
        }
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n",
            b"PROXY TCP9 1.1.1.1 1.1.1.1 1 2\r\n",
            b"PROXY TCP4 1.1.1.1 1.1.1.1 99999 2\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        // A v1 line that never ends.
        assert!(matches!(parse(&[b'P'; 200]), Parsed::Invalid(_)));
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 300));
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }
}
