//! Request-head limits and framing checks, applied to the byte stream
//! before hyper parses it: Gunicorn's `limit_request_line`,
//! `limit_request_fields` and `limit_request_field_size`, and the refusal of
//! a request carrying both `Content-Length` and `Transfer-Encoding` (the
//! request-smuggling shape; hyper alone would let `Transfer-Encoding` win
//! and hand the request to the app).
//!
//! [`Inspected`] wraps a connection's stream. It holds each request head back
//! until it is complete and checked, and follows the body framing
//! (`Content-Length` or chunked) only to find where the next head starts; it
//! never changes a byte hyper sees. A head that breaks a rule is replaced by
//! a minimal `GET` marked as rejected in the connection's [`Verdicts`], which
//! the service answers with the status, so every response on the connection
//! is still written by hyper, in order; the connection then ends.
//!
//! Framing errors hyper detects itself (garbage, a bad `Content-Length`, a
//! `Transfer-Encoding` that does not end in chunked) are left to hyper,
//! which answers 400 and closes. After an `Upgrade` or `CONNECT` head the
//! bytes are no longer HTTP, and inspection stops.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The request hyper is given in place of a rejected head.
const REJECTED_HEAD: &[u8] = b"GET / HTTP/1.1\r\nhost: rejected\r\nconnection: close\r\n\r\n";
/// Longest chunk-size line (with extensions) or trailer section followed.
const CHUNK_LINE_MAX: usize = 4096;
const TRAILERS_MAX: usize = 16 * 1024;
/// hyper's own limits, which stand where a limit of ferricorn's is 0: the
/// request target (64 KiB) and the header count (100).
const HYPER_MAX_TARGET: usize = 64 * 1024;
const HYPER_MAX_HEADERS: usize = 100;

/// The three limits, 0 meaning none of ferricorn's own.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub line: usize,
    pub fields: usize,
    pub field_size: usize,
}

impl Limits {
    /// The most a head may grow to before it is refused unseen.
    fn head_max(&self) -> usize {
        let line = if self.line == 0 {
            HYPER_MAX_TARGET
        } else {
            self.line
        };
        let fields = if self.fields == 0 {
            HYPER_MAX_HEADERS
        } else {
            self.fields
        };
        // No limit of its own on a field: a field is at most what hyper
        // would take as a whole request line.
        let size = if self.field_size == 0 {
            HYPER_MAX_TARGET
        } else {
            self.field_size
        };
        line + 2 + fields.saturating_mul(size + 2) + 2
    }

    /// Checks a complete head in one pass; the body framing that follows
    /// it, or the status to refuse it with.
    fn inspect(&self, head: &[u8]) -> Result<Framing, (StatusCode, &'static str)> {
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .skip_while(|l| l.is_empty());
        let request_line = lines.next().unwrap_or_default();
        if self.line != 0 && request_line.len() > self.line {
            return Err((StatusCode::URI_TOO_LONG, "request line too long"));
        }
        let mut fields = 0usize;
        let (mut content_length, mut transfer_encoding, mut upgrade) = (None, None, false);
        let mut hosts = 0usize;
        for line in lines.take_while(|l| !l.is_empty()) {
            fields += 1;
            if self.fields != 0 && fields > self.fields {
                let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                return Err((status, "too many header fields"));
            }
            if self.field_size != 0 && line.len() > self.field_size {
                let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                return Err((status, "header field too large"));
            }
            if let Some(v) = value(line, b"content-length") {
                content_length = Some(v);
            } else if let Some(v) = value(line, b"transfer-encoding") {
                transfer_encoding = Some(v);
            } else if value(line, b"upgrade").is_some() {
                upgrade = true;
            } else if let Some(host) = value(line, b"host") {
                hosts += 1;
                if !valid_host(host) {
                    return Err((StatusCode::BAD_REQUEST, "invalid Host"));
                }
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request names exactly one Host; no
        // request may name two (which would the app believe?).
        let http11 = request_line.ends_with(b" HTTP/1.1");
        if hosts > 1 || (http11 && hosts == 0) {
            let why = if hosts > 1 {
                "more than one Host"
            } else {
                "no Host"
            };
            return Err((StatusCode::BAD_REQUEST, why));
        }
        if content_length.is_some() && transfer_encoding.is_some() {
            let why = "both Content-Length and Transfer-Encoding";
            return Err((StatusCode::BAD_REQUEST, why));
        }
        let connect =
            request_line.len() >= 8 && request_line[..8].eq_ignore_ascii_case(b"CONNECT ");
        Ok(if connect || upgrade {
            // What follows is not HTTP (or a refused upgrade: the service
            // closes the connection after it).
            Framing::Opaque
        } else if let Some(te) = transfer_encoding {
            let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                Framing::ChunkSize(Vec::new())
            } else {
                // hyper refuses it with 400.
                Framing::Opaque
            }
        } else {
            match content_length.map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
            }) {
                None | Some(Some(0)) => Framing::Head,
                Some(Some(n)) => Framing::Body(n),
                // hyper refuses it with 400.
                Some(None) => Framing::Opaque,
            }
        })
    }
}

/// Whether a Host value can be `uri-host [ ":" port ]` (RFC 9110 §7.2): no
/// whitespace, and none of the delimiters that would make it a list or
/// carry a path, query or user. Empty is allowed (a target without an
/// authority).
fn valid_host(host: &[u8]) -> bool {
    !host
        .iter()
        .any(|&b| b.is_ascii_whitespace() || b.is_ascii_control() || b"/?#@,\\".contains(&b))
}

/// The trimmed value if `line` is the header field `name`.
fn value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let is = line.len() > name.len()
        && line[name.len()] == b':'
        && line[..name.len()].eq_ignore_ascii_case(name);
    is.then(|| line[name.len() + 1..].trim_ascii())
}

/// Which requests of a connection were rejected, shared by the stream
/// wrapper that decides and the service that answers.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Heads handed to hyper so far.
    delivered: AtomicU64,
    /// Index (1-based) of the rejected head, and its status; 0 for none.
    rejected_at: AtomicU64,
    status: AtomicU16,
    /// Requests the service has seen.
    served: AtomicU64,
}

impl Verdicts {
    /// Call once per request the service receives: the status to answer
    /// with if this is the rejected head's stand-in.
    pub fn next_request(&self) -> Option<StatusCode> {
        let index = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        if index != self.rejected_at.load(Ordering::SeqCst) {
            return None;
        }
        StatusCode::from_u16(self.status.load(Ordering::SeqCst)).ok()
    }
}

/// Where the stream is in the request it carries.
#[derive(Debug)]
enum Framing {
    /// Between requests: a head comes next.
    Head,
    /// `n` more body bytes.
    Body(u64),
    /// Chunked body: the size line so far.
    ChunkSize(Vec<u8>),
    /// `n` more bytes of chunk data (its CRLF is read as a blank size line).
    ChunkData(u64),
    /// Trailer section after the last chunk: the current line and the
    /// section's size so far.
    Trailers(Vec<u8>, usize),
    /// Not HTTP any more (upgrade), or framing hyper will refuse: pass on.
    Opaque,
    /// A head was rejected: nothing more is read.
    Closed,
}

/// A connection's stream with the checks above applied.
pub struct Inspected<S> {
    inner: S,
    limits: Limits,
    verdicts: Arc<Verdicts>,
    framing: Framing,
    /// A head being collected across reads.
    head: Vec<u8>,
    /// Checked bytes waiting for hyper, from `ready_from` on.
    ready: Vec<u8>,
    ready_from: usize,
}

impl<S> Inspected<S> {
    pub fn new(inner: S, limits: Limits, verdicts: Arc<Verdicts>) -> Self {
        Inspected {
            inner,
            limits,
            verdicts,
            framing: Framing::Head,
            head: Vec::new(),
            ready: Vec::new(),
            ready_from: 0,
        }
    }

    /// Follows the framing through `data` in place. Returns how many leading
    /// bytes may go to hyper as they are; it stops at a head that is not
    /// complete within `data`, or that breaks a rule.
    fn scan(&mut self, data: &[u8]) -> usize {
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            match &mut self.framing {
                Framing::Opaque => return data.len(),
                Framing::Closed => return pos,
                Framing::Body(n) | Framing::ChunkData(n) => {
                    let take = (*n).min(rest.len() as u64);
                    *n -= take;
                    pos += take as usize;
                    if *n == 0 {
                        self.framing = match self.framing {
                            Framing::Body(_) => Framing::Head,
                            _ => Framing::ChunkSize(Vec::new()),
                        };
                    }
                }
                Framing::ChunkSize(line) => {
                    let (taken, done) = take_line(rest, line);
                    pos += taken;
                    if line.len() > CHUNK_LINE_MAX {
                        self.framing = Framing::Opaque;
                    } else if done {
                        self.framing = match chunk_size(line) {
                            Some(0) => Framing::Trailers(Vec::new(), 0),
                            Some(n) => Framing::ChunkData(n),
                            // The CRLF after a chunk's data.
                            None if line.trim_ascii().is_empty() => Framing::ChunkSize(Vec::new()),
                            None => Framing::Opaque,
                        };
                    }
                }
                Framing::Trailers(line, total) => {
                    let (taken, done) = take_line(rest, line);
                    pos += taken;
                    *total += taken;
                    // The whole section counts, complete lines too (found
                    // by the boundary test: only an unfinished line did).
                    if *total > TRAILERS_MAX {
                        self.framing = Framing::Opaque;
                    } else if done {
                        let last = line.trim_ascii().is_empty();
                        line.clear();
                        if last {
                            self.framing = Framing::Head;
                        }
                    }
                }
                Framing::Head => {
                    // Blank lines before a request are ignored (RFC 9112 §2.2).
                    if matches!(rest[0], b'\r' | b'\n') {
                        pos += 1;
                        continue;
                    }
                    let Some(end) = head_end(rest, 0) else {
                        return pos;
                    };
                    match self.limits.inspect(&rest[..end]) {
                        Ok(framing) => self.accept_head(framing),
                        Err(_) => return pos,
                    }
                    pos += end;
                }
            }
        }
        pos
    }

    /// Takes bytes `scan` stopped at: a head begun here or in an earlier
    /// read. Whatever may go to hyper is appended to `ready`.
    fn take_head(&mut self, mut pending: Vec<u8>) {
        loop {
            let searched = self.head.len().saturating_sub(3);
            self.head.append(&mut pending);
            let Some(end) = head_end(&self.head, searched) else {
                let open_line = !self.head.contains(&b'\n');
                if open_line && self.limits.line != 0 && self.head.len() > self.limits.line + 1 {
                    self.reject(StatusCode::URI_TOO_LONG, "request line too long");
                } else if self.head.len() > self.limits.head_max() {
                    self.reject(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "request head too large",
                    );
                }
                return;
            };
            let mut head = std::mem::take(&mut self.head);
            let after = head.split_off(end);
            match self.limits.inspect(&head) {
                Ok(framing) => self.accept_head(framing),
                Err((status, why)) => return self.reject(status, why),
            }
            self.ready.extend_from_slice(&head);
            let passed = self.scan(&after);
            self.ready.extend_from_slice(&after[..passed]);
            if passed == after.len() {
                return;
            }
            // Another head begins within what was read.
            pending = after[passed..].to_vec();
        }
    }

    fn accept_head(&mut self, framing: Framing) {
        self.verdicts.delivered.fetch_add(1, Ordering::SeqCst);
        self.framing = framing;
    }

    /// Puts the stand-in request in place of the refused head and ends the
    /// stream after it.
    fn reject(&mut self, status: StatusCode, why: &'static str) {
        tracing::debug!(status = status.as_u16(), reason = why, "request refused");
        let index = self.verdicts.delivered.fetch_add(1, Ordering::SeqCst) + 1;
        self.verdicts
            .status
            .store(status.as_u16(), Ordering::SeqCst);
        self.verdicts.rejected_at.store(index, Ordering::SeqCst);
        self.head = Vec::new();
        self.ready.extend_from_slice(REJECTED_HEAD);
        self.framing = Framing::Closed;
    }
}

/// The end (exclusive) of a head that starts at `buf[0]`: just past the
/// blank line that closes it. `from` skips what an earlier search covered.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            Some(_) => i = nl + 1,
            None => return None,
        }
    }
    None
}

/// Appends `rest` up to and including a newline to `line`: (bytes taken,
/// whether the line ended).
fn take_line(rest: &[u8], line: &mut Vec<u8>) -> (usize, bool) {
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => {
            line.extend_from_slice(&rest[..=i]);
            (i + 1, true)
        }
        None => {
            line.extend_from_slice(rest);
            (rest.len(), false)
        }
    }
}

/// The size on a chunk-size line (hex, before any `;` extension); None
/// for no digits, a non-hex digit, or a size past `u64`.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

impl<S: AsyncRead + Unpin> AsyncRead for Inspected<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            // Nothing to read into; a zero-byte read here is not the end.
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.ready_from < this.ready.len() {
                let n = (this.ready.len() - this.ready_from).min(buf.remaining());
                buf.put_slice(&this.ready[this.ready_from..this.ready_from + n]);
                this.ready_from += n;
                if this.ready_from == this.ready.len() {
                    this.ready.clear();
                    this.ready_from = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.framing, Framing::Closed) {
                // Not end-of-stream: hyper takes that for a client gone and
                // would drop the stand-in's response. The response says
                // `Connection: close`, so hyper ends the connection itself.
                return Poll::Pending;
            }
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let after = buf.filled().len();
            if after == before {
                // End of stream: a partial head goes to hyper, which reports
                // the incomplete message, then the end.
                if this.head.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.ready = std::mem::take(&mut this.head);
                this.framing = Framing::Opaque;
                continue;
            }
            let passed = if this.head.is_empty() {
                this.scan(&buf.filled()[before..after])
            } else {
                0
            };
            if before + passed == after {
                return Poll::Ready(Ok(()));
            }
            let held = buf.filled()[before + passed..after].to_vec();
            buf.set_filled(before + passed);
            this.take_head(held);
            if passed > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inspected<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    use super::*;

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

    /// Reads `want` bytes through the inspector, `read_size` at a time.
    fn read_through(
        input: Pieces,
        want: usize,
        read_size: usize,
        verdicts: Arc<Verdicts>,
    ) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut inspected = Inspected::new(input, LIMITS, verdicts);
            let mut out = Vec::new();
            let mut buf = vec![0u8; read_size];
            while out.len() < want {
                let n = inspected.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            out
        })
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
        let out = read_through(pieces(&stream, &[]), stream.len(), 4096, verdicts.clone());
        assert_eq!(out, stream);
        assert_eq!(verdicts.delivered.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_request_line_still_arriving_is_refused_once_past_the_limit() {
        // Held while it could still end within the limit (its CR may be
        // the last byte read), refused one byte later.
        let arriving = |n: usize, want: usize| {
            let mut bytes = b"GET /".to_vec();
            bytes.resize(n, b'a');
            let verdicts = Arc::new(Verdicts::default());
            let out = read_through(pieces(&bytes, &[]), want, 4096, verdicts.clone());
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
        let out = read_through(pieces(&held, &[]), held.len(), 64, verdicts.clone());
        assert_eq!(out, held);
        assert_eq!(verdicts.rejected_at.load(Ordering::SeqCst), 0);
        let over = unended(max + 1);
        let verdicts = Arc::new(Verdicts::default());
        let out = read_through(
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
            let mut inspected = Inspected::new(Pieces(VecDeque::new()), LIMITS, Arc::default());
            let mut all =
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            all.extend_from_slice(body);
            let passed = inspected.scan(&all);
            (passed == all.len(), inspected.framing)
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
            let out = read_through(pieces(&stream, &cuts), stream.len(), read_size, verdicts.clone());
            prop_assert_eq!(&out, &stream);
            prop_assert_eq!(verdicts.delivered.load(Ordering::SeqCst), requests.len() as u64);
            prop_assert_eq!(verdicts.rejected_at.load(Ordering::SeqCst), 0);
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
            let out = read_through(pieces(&stream, &cuts), want, read_size, verdicts.clone());
            prop_assert_eq!(&out[..good.len()], &good[..]);
            prop_assert_eq!(&out[good.len()..], REJECTED_HEAD);
            for _ in &requests {
                prop_assert_eq!(verdicts.next_request(), None);
            }
            prop_assert_eq!(verdicts.next_request().map(|s| s.as_u16()), Some(bad.1));
        }
    }
}
