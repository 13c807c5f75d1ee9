//! The sans-IO half of request-head checking: a [`Scanner`] is fed the
//! bytes of one connection and answers, for what it was given, how many
//! leading bytes may go to hyper unchanged, that it needs more (a head is
//! still arriving), or that the head at the start is refused with a
//! status. It follows the body framing (`Content-Length` or chunked) only
//! to find where the next head starts. No I/O and no runtime: the property
//! tests drive it directly.

use hyper::StatusCode;

/// Longest chunk-size line (with extensions) followed.
const CHUNK_LINE_MAX: usize = 4096;
/// Largest trailer section followed.
pub(super) const TRAILERS_MAX: usize = 16 * 1024;
/// hyper's own limit on the request target, which stands where
/// `limit_request_line` (or `limit_request_field_size`) is 0.
pub(super) const HYPER_MAX_TARGET: usize = 64 * 1024;
/// hyper's own limit on the number of header fields, which stands where
/// `limit_request_fields` is 0.
pub(super) const HYPER_MAX_HEADERS: usize = 100;

/// What the scanner makes of the bytes it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The first `n` bytes go to hyper as they are; feed what follows
    /// them next.
    Pass(usize),
    /// The bytes begin a head that is not complete: feed them again with
    /// more appended.
    NeedMore,
    /// The head at the start is refused with this status. Nothing more is
    /// read from the connection.
    Reject(StatusCode),
}

/// Follows one connection's requests.
#[derive(Debug)]
pub struct Scanner {
    /// The connection's limits, from the config.
    limits: Limits,
    /// Where the stream is: the next byte begins a head, or belongs to a
    /// body, or is no longer checked.
    pub(super) framing: Framing,
    /// How far into the head at the start of the next input the search
    /// for its end has already looked (a head arriving in pieces is not
    /// searched again from its start).
    searched: usize,
    /// A head found refused while earlier bytes were passed: the next
    /// call answers with it, so the head is not scanned twice.
    refused: Option<(StatusCode, &'static str)>,
    /// Heads accepted so far.
    accepted: u64,
}

impl Scanner {
    pub fn new(limits: Limits) -> Scanner {
        Scanner {
            limits,
            framing: Framing::Head,
            searched: 0,
            refused: None,
            accepted: 0,
        }
    }

    /// Heads accepted so far: a refused head is number `accepted() + 1`.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// The client ended the stream within a head: the bytes go to hyper as
    /// they are (it reports the incomplete message), and nothing more is
    /// checked.
    pub fn end_of_stream(&mut self) {
        self.framing = Framing::Opaque;
    }

    /// Scans `input`, which begins where the previous call's answer left
    /// off: after the bytes it passed, or at the same head it needed more
    /// of.
    pub fn scan(&mut self, input: &[u8]) -> Scan {
        if let Some((status, why)) = self.refused.take() {
            return self.reject(status, why);
        }
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            match &mut self.framing {
                Framing::Opaque => return Scan::Pass(input.len()),
                Framing::Closed(status) => return Scan::Reject(*status),
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
                    let from = if pos == 0 { self.searched } else { 0 };
                    let Some(end) = head_end(rest, from) else {
                        // What a later call resumes from: the last three
                        // bytes may begin the blank line.
                        self.searched = rest.len().saturating_sub(3);
                        if pos > 0 {
                            return Scan::Pass(pos);
                        }
                        return self.check_unfinished(rest);
                    };
                    self.searched = 0;
                    match self.limits.inspect(&rest[..end]) {
                        Ok(framing) => {
                            self.accepted += 1;
                            self.framing = framing;
                            pos += end;
                        }
                        Err((status, why)) if pos == 0 => return self.reject(status, why),
                        Err(refused) => {
                            self.refused = Some(refused);
                            return Scan::Pass(pos);
                        }
                    }
                }
            }
        }
        Scan::Pass(pos)
    }

    /// A head still arriving: refused as soon as it is past a limit.
    fn check_unfinished(&mut self, head: &[u8]) -> Scan {
        let open_line = !head.contains(&b'\n');
        if open_line && self.limits.line != 0 && head.len() > self.limits.line + 1 {
            self.reject(StatusCode::URI_TOO_LONG, "request line too long")
        } else if head.len() > self.limits.head_max() {
            let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            self.reject(status, "request head too large")
        } else {
            Scan::NeedMore
        }
    }

    fn reject(&mut self, status: StatusCode, why: &'static str) -> Scan {
        tracing::debug!(status = status.as_u16(), reason = why, "request refused");
        self.framing = Framing::Closed(status);
        Scan::Reject(status)
    }
}

/// The three limits, 0 meaning none of ferricorn's own.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `limit_request_line`: longest request line (414 past it).
    pub line: usize,
    /// `limit_request_fields`: most header fields (431 past it).
    pub fields: usize,
    /// `limit_request_field_size`: longest field line (431 past it).
    pub field_size: usize,
}

impl Limits {
    /// The most a head may grow to before it is refused unseen.
    pub(super) fn head_max(&self) -> usize {
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
    pub(super) fn inspect(&self, head: &[u8]) -> Result<Framing, (StatusCode, &'static str)> {
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

/// Where the stream is in the request it carries.
#[derive(Debug)]
pub(super) enum Framing {
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
    /// A head was refused with this status: nothing more is read.
    Closed(StatusCode),
}

/// The end (exclusive) of a head that starts at `buf[0]`: just past the
/// blank line that closes it. `from` skips what an earlier search covered.
pub(super) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
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
pub(super) fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}
