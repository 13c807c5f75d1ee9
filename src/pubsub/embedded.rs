//! A worker's link to the supervisor's hub (see [`super::hub`]): tells it
//! which topics this worker wants, writes what is published here, and
//! hands what other workers published to this worker's subscribers.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::wire::{self, Frame};
use super::{Inner, Out};

pub(super) fn start(
    inner: Arc<Inner>,
    stream: std::os::unix::net::UnixStream,
    outbound: mpsc::UnboundedReceiver<Out>,
) {
    let stream = match stream
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(stream))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "pub/sub: cannot use the hub socket; messages reach this worker's subscribers only");
            tokio::spawn(discard(inner, outbound));
            return;
        }
    };
    inner.set_connected(true);
    let (read, write) = stream.into_split();
    let reader = inner.clone();
    tokio::spawn(async move {
        let mut frames = FramedRead::new(read, wire::codec());
        while let Some(Ok(frame)) = frames.next().await {
            let frame = frame.freeze();
            if let Some(Frame::Publish { topic, message }) = wire::decode(&frame) {
                reader.deliver(topic, frame.slice_ref(message));
            }
        }
        // Only the supervisor's exit closes the hub's end, and the worker
        // follows it; this is for the record.
        reader.set_connected(false);
        tracing::error!(
            "pub/sub: the hub closed its socket; messages reach this worker's subscribers only"
        );
    });
    tokio::spawn(write_loop(
        inner,
        FramedWrite::new(write, wire::codec()),
        outbound,
    ));
}

/// Writes subscription changes and publishes to the hub, in the order they
/// happened: a change rung before a publish is written before it, so a
/// member that subscribes and then announces itself hears every answer.
async fn write_loop(
    inner: Arc<Inner>,
    mut sink: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    mut outbound: mpsc::UnboundedReceiver<Out>,
) {
    let mut told: HashSet<Arc<str>> = HashSet::new();
    let mut version = None;
    loop {
        let out = tokio::select! {
            biased;
            () = inner.changed.notified() => None,
            out = outbound.recv() => match out {
                Some(out) => Some(out),
                None => return,
            },
        };
        let mut publishes: Vec<bytes::Bytes> = Vec::new();
        let mut flushed = Vec::new();
        let mut count = 0u64;
        let mut next = out;
        loop {
            match next {
                Some(Out::Publish { topic, message }) => {
                    inner.dequeued(&topic, &message);
                    publishes.push(wire::publish(&topic, &message));
                    count += 1;
                }
                Some(Out::Flush(done)) => flushed.push(done),
                None => {}
            }
            match outbound.try_recv() {
                Ok(more) => next = Some(more),
                Err(_) => break,
            }
        }
        // After taking the publishes, before writing them: a subscription
        // made before any of them (on any thread) goes out first.
        let mut frames: Vec<bytes::Bytes> = Vec::new();
        if version.is_none_or(|v| inner.changed_since(v)) {
            let (wanted, now) = inner.wanted();
            for topic in wanted.difference(&told) {
                frames.push(wire::subscribe(topic));
            }
            for topic in told.difference(&wanted) {
                frames.push(wire::unsubscribe(topic));
            }
            told = wanted;
            version = Some(now);
        }
        frames.extend(publishes);
        let mut written = true;
        for frame in frames {
            if sink.feed(frame).await.is_err() {
                written = false;
                break;
            }
        }
        if !written || SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            inner.count_lost(count);
            inner.set_connected(false);
            tracing::error!(
                "pub/sub: cannot write to the hub; messages reach this worker's subscribers only"
            );
            return discard(inner, outbound).await;
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// With no hub: counts what would have left this worker as lost.
pub(super) async fn discard(inner: Arc<Inner>, mut outbound: mpsc::UnboundedReceiver<Out>) {
    while let Some(out) = outbound.recv().await {
        match out {
            Out::Publish { topic, message } => {
                inner.dequeued(&topic, &message);
                inner.count_lost(1);
            }
            Out::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
