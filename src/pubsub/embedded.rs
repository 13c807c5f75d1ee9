//! A worker's link to the supervisor's hub (see [`super::hub`]): tells it
//! which topics this worker wants, writes what is published here, and
//! hands what other workers published to this worker's subscribers.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::wire::{self, Frame};
use super::{Inner, Out, Told};

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
            tracing::error!(error = %e, "pub/sub: cannot use the hub socket ({e}); messages reach this worker's subscribers only");
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
    let mut told = Told::default();
    loop {
        let out = tokio::select! {
            biased;
            () = inner.changed.notified() => None,
            out = outbound.recv() => match out {
                Some(out) => Some(out),
                None => return,
            },
        };
        let batch = inner.take_batch(out, &mut outbound, usize::MAX);
        // After taking the publishes, before writing them: a subscription
        // made before any of them (on any thread) goes out first.
        let mut frames: Vec<bytes::Bytes> = Vec::new();
        if told.stale(&inner) {
            let change = told.change(&inner);
            frames.extend(change.add.iter().map(|topic| wire::subscribe(topic)));
            frames.extend(change.remove.iter().map(|topic| wire::unsubscribe(topic)));
            told.settle(change);
        }
        frames.extend(
            batch
                .publishes
                .iter()
                .map(|(topic, message)| wire::publish(topic, message)),
        );
        let mut written = true;
        for frame in frames {
            if sink.feed(frame).await.is_err() {
                written = false;
                break;
            }
        }
        if !written || SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            inner.count_lost(batch.count());
            inner.set_connected(false);
            tracing::error!(
                "pub/sub: cannot write to the hub; messages reach this worker's subscribers only"
            );
            return discard(inner, outbound).await;
        }
        batch.written();
    }
}

/// With no hub (or no Redis): counts what would have left this worker as
/// lost.
pub(super) async fn discard(inner: Arc<Inner>, mut outbound: mpsc::UnboundedReceiver<Out>) {
    while let Some(out) = outbound.recv().await {
        inner.discard(out);
    }
}
