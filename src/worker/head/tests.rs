//! The head checks: every limit at its boundary, Host, framing, and
//! properties over requests split at any point, all without a runtime
//! except the one test of the `AsyncRead` adapter.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::scan::{
    chunk_size, head_end, Framing, HYPER_MAX_HEADERS, HYPER_MAX_TARGET, TRAILERS_MAX,
};
use super::*;

/// Longest chunk-size line followed (scan's own constant, restated: the
/// test pins the documented figure).
const CHUNK_LINE_MAX: usize = 4096;

/// A peer whose bytes arrive in the given pieces.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // An empty read means end of stream; a socket never returns one
        // otherwise, so neither does this peer.
        while self.0.front().is_some_and(Vec::is_empty) {
            self.0.pop_front();
        }
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

const LIMITS: Limits = Limits {
    line: 200,
    fields: 10,
    field_size: 100,
};

/// One valid request: no body, a sized body, or a chunked body with
/// extensions and a trailer.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let path = proptest::collection::vec(proptest::sample::select(b"abc/.-_".to_vec()), 0..50);
    let body = proptest::collection::vec(any::<u8>(), 0..300);
    let chunks = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..80), 0..5);
    (path, 0..3u8, body, chunks).prop_map(|(path, kind, body, chunks)| {
        let target = String::from_utf8(path).unwrap();
        let mut out = format!("POST /{target} HTTP/1.1\r\nHost: a\r\n").into_bytes();
        match kind {
            0 => out.extend_from_slice(b"\r\n"),
            1 => {
                out.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
                out.extend_from_slice(&body);
            }
            _ => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for chunk in &chunks {
                    out.extend(format!("{:x};ext=1\r\n", chunk.len()).bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
            }
        }
        out
    })
}

/// Splits `bytes` at the given cut points (any order, any range).
fn pieces(bytes: &[u8], cuts: &[usize]) -> Pieces {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = VecDeque::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        out.push_back(bytes[from..cut].to_vec());
        from = cut;
    }
    Pieces(out)
}

/// Reads `want` bytes through the inspector, `read_size` at a time, as
/// [`Inspected`] does but with no runtime: (what hyper got, heads accepted).
fn read_through(
    input: Pieces,
    want: usize,
    read_size: usize,
    verdicts: Arc<Verdicts>,
) -> (Vec<u8>, u64) {
    let mut inspector = Inspector::new(LIMITS, verdicts);
    let mut input = input.0;
    let mut out = Vec::new();
    while out.len() < want {
        if let Some(bytes) = inspector.pending(read_size) {
            out.extend_from_slice(bytes);
            continue;
        }
        if inspector.closed() {
            break;
        }
        // One read: at most `read_size` bytes of the next piece.
        while input.front().is_some_and(Vec::is_empty) {
            input.pop_front();
        }
        let Some(mut piece) = input.pop_front() else {
            if inspector.end_of_stream() {
                continue;
            }
            break;
        };
        if piece.len() > read_size {
            input.push_front(piece.split_off(read_size));
        }
        let kept = inspector.take(&piece);
        out.extend_from_slice(&piece[..kept]);
    }
    (out, inspector.scanner.accepted())
}

/// What `inspect` makes of `head`: the framing that follows it, by
/// name, or the status it is refused with.
fn verdict(limits: Limits, head: &str) -> Result<&'static str, u16> {
    match limits.inspect(head.as_bytes()) {
        Ok(Framing::Head) => Ok("head"),
        Ok(Framing::Body(_)) => Ok("body"),
        Ok(Framing::ChunkSize(_)) => Ok("chunked"),
        Ok(Framing::Opaque) => Ok("opaque"),
        Ok(other) => panic!("inspect gave {other:?}"),
        Err((status, _)) => Err(status.as_u16()),
    }
}

/// A head with `fields` header lines (Host first) after `line`.
fn head(line: &str, fields: &[&str]) -> String {
    let mut out = format!("{line}\r\n");
    for f in fields {
        out.push_str(f);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

#[test]
fn each_limit_allows_its_value_and_refuses_one_more() {
    // A request line of exactly `n` bytes.
    let line = |n: usize| format!("GET /{} HTTP/1.1", "a".repeat(n - "GET / HTTP/1.1".len()));
    assert_eq!(verdict(LIMITS, &head(&line(200), &["Host: a"])), Ok("head"));
    assert_eq!(verdict(LIMITS, &head(&line(201), &["Host: a"])), Err(414));
    let many = |n: usize| {
        let mut fields = vec!["Host: a".to_owned()];
        fields.extend((1..n).map(|i| format!("X-{i}: 1")));
        fields
    };
    let ten: Vec<String> = many(10);
    let eleven: Vec<String> = many(11);
    let as_refs = |v: &[String]| {
        v.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    assert_eq!(
        verdict(LIMITS, &head("GET / HTTP/1.1", &[&as_refs(&ten)])),
        Ok("head")
    );
    assert_eq!(
        verdict(LIMITS, &head("GET / HTTP/1.1", &[&as_refs(&eleven)])),
        Err(431)
    );
    // A field line of exactly `n` bytes.
    let field = |n: usize| format!("X: {}", "a".repeat(n - 3));
    assert_eq!(
        verdict(LIMITS, &head("GET / HTTP/1.1", &["Host: a", &field(100)])),
        Ok("head")
    );
    assert_eq!(
        verdict(LIMITS, &head("GET / HTTP/1.1", &["Host: a", &field(101)])),
        Err(431)
    );
    // 0: no limit of ferricorn's own.
    let none = Limits {
        line: 0,
        fields: 0,
        field_size: 0,
    };
    assert_eq!(
        verdict(none, &head(&line(5000), &["Host: a", &field(5000)])),
        Ok("head")
    );
}

#[test]
fn a_head_ends_at_its_first_blank_line_whatever_the_line_ends() {
    assert_eq!(
        head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", 0),
        Some(27)
    );
    assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest", 0), Some(24));
    assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\r\nrest", 0), Some(25));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
    // Searching on from where an earlier search of the same head ended.
    assert_eq!(head_end(b"a\r\nb\r\n\r\n", 4), Some(8));
    assert_eq!(head_end(b"a\r\n\r\nb\r\n\r\n", 5), Some(10));
}

#[test]
fn blank_lines_before_a_request_are_skipped_and_passed_on() {
    // RFC 9112 §2.2: a server ignores at least one empty line before a
    // request line.
    let stream = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    let verdicts = Arc::new(Verdicts::default());
    let (out, accepted) = read_through(pieces(&stream, &[]), stream.len(), 4096, verdicts.clone());
    assert_eq!(out, stream);
    assert_eq!(accepted, 1);
}

#[test]
fn a_request_line_still_arriving_is_refused_once_past_the_limit() {
    // Held while it could still end within the limit (its CR may be
    // the last byte read), refused one byte later.
    let arriving = |n: usize, want: usize| {
        let mut bytes = b"GET /".to_vec();
        bytes.resize(n, b'a');
        let verdicts = Arc::new(Verdicts::default());
        let (out, _) = read_through(pieces(&bytes, &[]), want, 4096, verdicts.clone());
        (out, verdicts.next_request())
    };
    // Held until the peer's stream ends, then handed to hyper as it is.
    let (out, verdict) = arriving(LIMITS.line + 1, LIMITS.line + 2);
    assert_eq!(verdict, None);
    assert_eq!(out.len(), LIMITS.line + 1);
    let (out, verdict) = arriving(LIMITS.line + 2, REJECTED_HEAD.len());
    assert_eq!(verdict, Some(StatusCode::URI_TOO_LONG));
    assert_eq!(out, REJECTED_HEAD);
}

#[test]
fn host_is_required_once_on_http_1_1_and_never_twice() {
    let get = |version: &str, fields: &[&str]| {
        verdict(LIMITS, &head(&format!("GET / {version}"), fields))
    };
    assert_eq!(get("HTTP/1.1", &["Host: a"]), Ok("head"));
    assert_eq!(get("HTTP/1.1", &["host:a:8080"]), Ok("head"));
    assert_eq!(get("HTTP/1.1", &["Host: [::1]:80"]), Ok("head"));
    assert_eq!(get("HTTP/1.1", &["Host:"]), Ok("head"));
    assert_eq!(get("HTTP/1.1", &[]), Err(400));
    assert_eq!(get("HTTP/1.1", &["Host: a", "Host: a"]), Err(400));
    assert_eq!(get("HTTP/1.0", &[]), Ok("head"));
    assert_eq!(get("HTTP/1.0", &["Host: a", "Host: b"]), Err(400));
    for bad in ["a b", "a,b", "a/b", "a?b", "a#b", "u@a", "a\\b", "a\tb"] {
        assert_eq!(
            get("HTTP/1.1", &[&format!("Host: {bad}")]),
            Err(400),
            "{bad:?}"
        );
    }
}

#[test]
fn the_framing_after_each_kind_of_head() {
    let with = |fields: &[&str]| {
        let mut all = vec!["Host: a"];
        all.extend_from_slice(fields);
        verdict(LIMITS, &head("POST / HTTP/1.1", &all))
    };
    assert_eq!(with(&[]), Ok("head"));
    assert_eq!(with(&["Content-Length: 0"]), Ok("head"));
    assert_eq!(with(&["Content-Length: 5"]), Ok("body"));
    assert_eq!(with(&["Content-Length: five"]), Ok("opaque"));
    assert_eq!(with(&["Transfer-Encoding: gzip, chunked"]), Ok("chunked"));
    assert_eq!(with(&["Transfer-Encoding: chunked, gzip"]), Ok("opaque"));
    assert_eq!(
        with(&["Content-Length: 5", "Transfer-Encoding: chunked"]),
        Err(400)
    );
    assert_eq!(with(&["Upgrade: websocket"]), Ok("opaque"));
    assert_eq!(
        verdict(LIMITS, &head("CONNECT a:443 HTTP/1.1", &["Host: a:443"])),
        Ok("opaque")
    );
    assert_eq!(
        verdict(LIMITS, &head("CONNECTX a HTTP/1.1", &["Host: a"])),
        Ok("head")
    );
}

#[test]
fn head_max_is_the_sum_of_the_limits_and_holds_exactly() {
    assert_eq!(LIMITS.head_max(), 200 + 2 + 10 * (100 + 2) + 2);
    let none = Limits {
        line: 0,
        fields: 0,
        field_size: 0,
    };
    assert_eq!(
        none.head_max(),
        HYPER_MAX_TARGET + 2 + HYPER_MAX_HEADERS * (HYPER_MAX_TARGET + 2) + 2
    );
    // A head that never ends: held up to head_max bytes (then the
    // client's end of stream hands it to hyper as it is), refused one
    // byte later.
    let unended = |n: usize| {
        let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
        bytes.resize(n, b'x');
        bytes
    };
    let max = LIMITS.head_max();
    let held = unended(max);
    let verdicts = Arc::new(Verdicts::default());
    let (out, _) = read_through(pieces(&held, &[]), held.len(), 64, verdicts.clone());
    assert_eq!(out, held);
    assert_eq!(
        verdicts
            .rejected_at
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let over = unended(max + 1);
    let verdicts = Arc::new(Verdicts::default());
    let (out, _) = read_through(
        pieces(&over, &[]),
        REJECTED_HEAD.len(),
        64,
        verdicts.clone(),
    );
    assert_eq!(out, REJECTED_HEAD);
    assert_eq!(
        verdicts.next_request(),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
}

#[test]
fn chunk_lines_and_trailers_are_followed_only_so_far() {
    let scanned = |body: &[u8]| {
        let mut scanner = Scanner::new(LIMITS);
        let mut all = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        all.extend_from_slice(body);
        let passed = scanner.scan(&all) == Scan::Pass(all.len());
        (passed, scanner.framing)
    };
    // Trailers: up to TRAILERS_MAX followed, then passed on unread.
    let trailers = |size: usize| {
        let mut body = b"0\r\n".to_vec();
        let line = format!("T: {}\r\n", "t".repeat(size - 5));
        body.extend_from_slice(line.as_bytes());
        body
    };
    assert!(matches!(
        scanned(&trailers(TRAILERS_MAX)),
        (true, Framing::Trailers(_, _))
    ));
    assert!(matches!(
        scanned(&trailers(TRAILERS_MAX + 1)),
        (true, Framing::Opaque)
    ));
    let mut ended = trailers(100);
    ended.extend_from_slice(b"\r\n");
    assert!(matches!(scanned(&ended), (true, Framing::Head)));
    // A chunk-size line: up to CHUNK_LINE_MAX followed.
    let size_line = |n: usize| format!("5;{}", "e".repeat(n - 2)).into_bytes();
    assert!(matches!(
        scanned(&size_line(CHUNK_LINE_MAX)),
        (true, Framing::ChunkSize(_))
    ));
    assert!(matches!(
        scanned(&size_line(CHUNK_LINE_MAX + 1)),
        (true, Framing::Opaque)
    ));
    // A size line that is not hex (nor the blank line after a chunk's
    // data): not followed further.
    assert!(matches!(
        scanned(b"5\r\nhello\r\nzz\r\n"),
        (true, Framing::Opaque)
    ));
    assert!(matches!(
        scanned(b"5\r\nhello\r\n0\r\n\r\n"),
        (true, Framing::Head)
    ));
    assert_eq!(chunk_size(b"1f;x=y\r\n"), Some(31));
    assert_eq!(chunk_size(b"\r\n"), None);
    assert_eq!(chunk_size(b"ffffffffffffffff\r\n"), Some(u64::MAX));
    assert_eq!(chunk_size(b"00000000000000000001\r\n"), Some(1));
    assert_eq!(chunk_size(b"10000000000000000\r\n"), None);
    assert_eq!(chunk_size(b"+1\r\n"), Some(1));
}

proptest! {
    // Cases from PROPTEST_CASES (default 256); no regression files in
    // the tree: a failure prints its minimal input.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Valid pipelined requests pass unchanged however the bytes are
    /// split, and every head is counted.
    #[test]
    fn valid_requests_pass_unchanged(
        requests in proptest::collection::vec(request(), 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        read_size in 1usize..9000,
    ) {
        let stream: Vec<u8> = requests.concat();
        let verdicts = Arc::new(Verdicts::default());
        let (out, accepted) = read_through(pieces(&stream, &cuts), stream.len(), read_size, verdicts.clone());
        prop_assert_eq!(&out, &stream);
        prop_assert_eq!(accepted, requests.len() as u64);
        prop_assert_eq!(verdicts.rejected_at.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// A bad head after valid requests: they pass, then the stand-in,
    /// with the verdict on the right request.
    #[test]
    fn bad_head_is_replaced_after_the_good_ones(
        requests in proptest::collection::vec(request(), 0..4),
        bad in prop_oneof![
            (201usize..400).prop_map(|n| (format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(n)), 414u16)),
            (11usize..20).prop_map(|n| (format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(n)), 431)),
            (101usize..200).prop_map(|n| (format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(n)), 431)),
            Just(("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(), 400)),
        ],
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        read_size in 1usize..9000,
    ) {
        let good: Vec<u8> = requests.concat();
        let mut stream = good.clone();
        stream.extend_from_slice(bad.0.as_bytes());
        let verdicts = Arc::new(Verdicts::default());
        let want = good.len() + REJECTED_HEAD.len();
        let (out, _) = read_through(pieces(&stream, &cuts), want, read_size, verdicts.clone());
        prop_assert_eq!(&out[..good.len()], &good[..]);
        prop_assert_eq!(&out[good.len()..], REJECTED_HEAD);
        for _ in &requests {
            prop_assert_eq!(verdicts.next_request(), None);
        }
        prop_assert_eq!(verdicts.next_request().map(|s| s.as_u16()), Some(bad.1));
    }
}

/// The `AsyncRead` adapter passes bytes and the stand-in in order (the
/// only test here with a runtime: it exercises what the others cannot).
#[test]
fn the_adapter_reads_through_the_inspector() {
    use tokio::io::AsyncReadExt;
    let mut stream = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    let good = stream.len();
    stream.extend_from_slice(b"GET /b HTTP/1.1\r\n\r\n");
    let verdicts = Arc::new(Verdicts::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let input = pieces(&stream, &[5, 40]);
        let mut inspected = Inspected::new(input, LIMITS, verdicts.clone());
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        while out.len() < good + REJECTED_HEAD.len() {
            let n = inspected.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "an empty read before the stand-in");
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    assert_eq!(&out[..good], &stream[..good]);
    assert_eq!(&out[good..], REJECTED_HEAD);
    assert_eq!(verdicts.next_request(), None);
    assert_eq!(verdicts.next_request(), Some(StatusCode::BAD_REQUEST));
}

#[test]
fn a_refused_head_after_passed_bytes_is_answered_without_a_second_scan() {
    let mut scanner = Scanner::new(LIMITS);
    let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut all = good.to_vec();
    all.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(scanner.scan(&all), Scan::Pass(good.len()));
    // The verdict was kept: the next call answers it whatever it is given.
    assert_eq!(scanner.scan(b"x"), Scan::Reject(StatusCode::BAD_REQUEST));
    assert_eq!(scanner.accepted(), 1);
    // And it stays closed.
    assert_eq!(scanner.scan(good), Scan::Reject(StatusCode::BAD_REQUEST));
}
