//! Request-head limits and framing checks, applied to the byte stream
//! before hyper parses it: Gunicorn's `limit_request_line`,
//! `limit_request_fields` and `limit_request_field_size`, a Host that is
//! missing, doubled or not a host, and the refusal of a request carrying
//! both `Content-Length` and `Transfer-Encoding` (the request-smuggling
//! shape; hyper alone would let `Transfer-Encoding` win and hand the
//! request to the app).
//!
//! [`scan`] decides, without I/O. [`Inspector`] keeps what the decisions
//! need kept: a head still arriving is held back until it is complete and
//! checked; bytes that pass are never changed. A head that breaks a rule is
//! replaced by a minimal `GET` marked as rejected in the connection's
//! [`Verdicts`], which the service answers with the status, so every
//! response on the connection is still written by hyper, in order; the
//! connection then ends. [`Inspected`] is the thin `AsyncRead` over it.
//!
//! Framing errors hyper detects itself (garbage, a bad `Content-Length`, a
//! `Transfer-Encoding` that does not end in chunked) are left to hyper,
//! which answers 400 and closes. After an `Upgrade` or `CONNECT` head the
//! bytes are no longer HTTP, and inspection stops.

mod scan;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use scan::Limits;
use scan::{Scan, Scanner};

/// The request hyper is given in place of a rejected head.
const REJECTED_HEAD: &[u8] = b"GET / HTTP/1.1\r\nhost: rejected\r\nconnection: close\r\n\r\n";

/// Which request of a connection was rejected, shared by the stream
/// wrapper that decides and the service that answers.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Index (1-based) of the rejected head; 0 for none.
    rejected_at: AtomicU64,
    /// Its status.
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

/// One connection's inspection, without I/O: given the bytes of each read,
/// it says how many may stay where they are, and keeps the rest.
pub struct Inspector {
    /// Decides.
    scanner: Scanner,
    /// Where a refusal is recorded for the service to answer.
    verdicts: Arc<Verdicts>,
    /// Bytes read but not passed: the start of a head still arriving.
    held: Vec<u8>,
    /// Bytes for hyper that are not in its buffer (a held head once
    /// complete, what came after it, or the stand-in), from `out_from` on.
    out: Vec<u8>,
    out_from: usize,
    /// A head was refused: nothing more is read.
    closed: bool,
}

impl Inspector {
    pub fn new(limits: Limits, verdicts: Arc<Verdicts>) -> Inspector {
        Inspector {
            scanner: Scanner::new(limits),
            verdicts,
            held: Vec::new(),
            out: Vec::new(),
            out_from: 0,
            closed: false,
        }
    }

    /// Takes bytes just read into hyper's buffer: how many leading bytes
    /// stay there as they are. The rest is kept, to come out of
    /// [`Inspector::pending`] once it may.
    pub fn take(&mut self, read: &[u8]) -> usize {
        let was_closed = self.closed;
        let kept = if self.held.is_empty() {
            self.feed(read)
        } else {
            let mut data = std::mem::take(&mut self.held);
            data.extend_from_slice(read);
            let passed = self.feed(&data);
            self.out.extend_from_slice(&data[..passed]);
            0
        };
        // Refused in this take: the stand-in goes after what passed, as
        // hyper answers requests in order.
        if self.closed && !was_closed {
            self.out.extend_from_slice(REJECTED_HEAD);
        }
        kept
    }

    /// Feeds `data` to the scanner: how many leading bytes pass. What
    /// follows them is held (a head still arriving) or dropped for the
    /// stand-in (a refused head).
    fn feed(&mut self, data: &[u8]) -> usize {
        let mut pos = 0;
        while pos < data.len() {
            match self.scanner.scan(&data[pos..]) {
                Scan::Pass(n) => pos += n,
                Scan::NeedMore => {
                    self.held.extend_from_slice(&data[pos..]);
                    break;
                }
                Scan::Reject(status) => {
                    let index = self.scanner.accepted() + 1;
                    self.verdicts
                        .status
                        .store(status.as_u16(), Ordering::SeqCst);
                    self.verdicts.rejected_at.store(index, Ordering::SeqCst);
                    self.closed = true;
                    break;
                }
            }
        }
        pos
    }

    /// Takes bytes read before hyper had a buffer to read into: what passes
    /// goes out first, then whatever `take` kept back for later.
    pub fn preload(&mut self, early: &[u8]) {
        let kept = self.take(early);
        let mut out = early[..kept].to_vec();
        out.extend_from_slice(&self.out[self.out_from..]);
        self.out = out;
        self.out_from = 0;
    }

    /// Bytes waiting for hyper, at most `max`; consumed.
    pub fn pending(&mut self, max: usize) -> Option<&[u8]> {
        if self.out_from == self.out.len() {
            if !self.out.is_empty() {
                self.out.clear();
                self.out_from = 0;
            }
            return None;
        }
        let from = self.out_from;
        let n = (self.out.len() - from).min(max);
        self.out_from += n;
        Some(&self.out[from..from + n])
    }

    /// Whether a head was refused (nothing more is to be read).
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// The client ended the stream: a partial head goes to hyper as it is,
    /// which reports the incomplete message. Whether there was one.
    pub fn end_of_stream(&mut self) -> bool {
        if self.held.is_empty() {
            return false;
        }
        self.scanner.end_of_stream();
        let held = std::mem::take(&mut self.held);
        self.out.extend_from_slice(&held);
        true
    }
}

/// A connection's stream with the checks above applied.
pub struct Inspected<S> {
    /// The connection.
    inner: S,
    /// What its bytes pass through on the way to hyper.
    inspector: Inspector,
}

impl<S> Inspected<S> {
    pub fn new(inner: S, limits: Limits, verdicts: Arc<Verdicts>) -> Self {
        Inspected {
            inner,
            inspector: Inspector::new(limits, verdicts),
        }
    }

    /// [`Inspected::new`] for a stream of which `early` was already read
    /// (past a PROXY header): those bytes come first, inspected as any.
    pub fn with_prefix(inner: S, early: &[u8], limits: Limits, verdicts: Arc<Verdicts>) -> Self {
        let mut inspected = Inspected::new(inner, limits, verdicts);
        if !early.is_empty() {
            inspected.inspector.preload(early);
        }
        inspected
    }
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
            if let Some(bytes) = this.inspector.pending(buf.remaining()) {
                buf.put_slice(bytes);
                return Poll::Ready(Ok(()));
            }
            if this.inspector.closed() {
                // Not end-of-stream: hyper takes that for a client gone and
                // would drop the stand-in's response. The response says
                // `Connection: close`, so hyper ends the connection itself.
                return Poll::Pending;
            }
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let after = buf.filled().len();
            if after == before {
                if this.inspector.end_of_stream() {
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let kept = this.inspector.take(&buf.filled()[before..after]);
            buf.set_filled(before + kept);
            // Never an empty read: hyper would take it for the end.
            if kept > 0 {
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
