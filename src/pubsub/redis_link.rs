//! A worker's link to Redis (`pubsub_url = "redis://…"`): the same topics
//! as the hub, over Redis pub/sub, so workers on every host that uses the
//! server share them.
//!
//! Two connections: one subscribed (Redis allows nothing else on it), one
//! multiplexed for `PUBLISH`, pipelined in batches in the order published.
//! Channels are `<crate name>:<topic>`, so two services sharing a server do
//! not hear each other. Each message carries its publisher's node id first,
//! so a worker skips its own (its subscribers had them from memory).
//!
//! Redis unreachable, at start or later, is never fatal: the link retries
//! with backoff ([`FIRST_RETRY`] doubling to [`LAST_RETRY`]), subscribers
//! here keep hearing what is published here, `/health` says "degraded",
//! and what was published meanwhile is counted as lost and logged when the
//! link is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::mpsc;

use super::{Inner, Out, Told};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);
/// How long a link must have held for the next outage to start its
/// backoff from [`FIRST_RETRY`] again.
const STABLE: Duration = Duration::from_secs(10);
/// Longest wait for a connect, a subscribe or a batch of publishes.
const PATIENCE: Duration = Duration::from_secs(5);
/// A quiet link is checked this often, so a server that vanished without
/// closing the connection is noticed.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Most publishes sent in one pipeline.
const BATCH: usize = 512;

const PREFIX: &str = concat!(env!("CARGO_PKG_NAME"), ":");

pub(super) fn start(inner: Arc<Inner>, url: String, outbound: mpsc::UnboundedReceiver<Out>) {
    tokio::spawn(run(inner, url, outbound));
}

/// Where the link was when it went down, to report the outage when it is
/// back.
struct Outage {
    since: Instant,
    lost_before: u64,
}

async fn run(inner: Arc<Inner>, url: String, mut outbound: mpsc::UnboundedReceiver<Out>) {
    let shown = crate::config::redact_url(&url);
    let client = match redis::Client::open(url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            // The config check parses the same URL: only a file changed
            // between the supervisor's read and this one gets here.
            tracing::error!(url = %shown, error = %e, "pub/sub: {shown} is not a Redis URL ({e}); messages reach this worker's subscribers only");
            return super::embedded::discard(inner, outbound).await;
        }
    };
    let mut delay = FIRST_RETRY;
    let mut outage = Some(Outage {
        since: Instant::now(),
        lost_before: 0,
    });
    let mut first = true;
    loop {
        match connect(&client).await {
            Ok((publisher, sink, stream)) => {
                inner.set_connected(true);
                match outage.take() {
                    Some(o) if !first => {
                        let lost = inner.lost() - o.lost_before;
                        tracing::warn!(
                            url = %shown,
                            down_ms = o.since.elapsed().as_millis() as u64,
                            lost,
                            "pub/sub: Redis reachable again at {shown} after {:.1} s; {lost} messages published here meanwhile reached this worker only",
                            o.since.elapsed().as_secs_f64()
                        );
                    }
                    _ => tracing::info!(url = %shown, "pub/sub: connected to Redis at {shown}"),
                }
                let began = Instant::now();
                let why = session(&inner, publisher, sink, stream, &mut outbound).await;
                inner.set_connected(false);
                // Only a link that held resets the backoff: one that fails
                // right after connecting (a refused SUBSCRIBE, say) must not
                // reconnect every 100 ms.
                if began.elapsed() >= STABLE {
                    delay = FIRST_RETRY;
                }
                let Some(why) = why else { return };
                tracing::error!(url = %shown, error = %why, "pub/sub: lost Redis at {shown} ({why}); reconnecting with backoff; messages published meanwhile reach this worker only and are counted as lost");
                outage = Some(Outage {
                    since: Instant::now(),
                    lost_before: inner.lost(),
                });
            }
            Err(e) => {
                if first {
                    tracing::error!(url = %shown, error = %e, "pub/sub: Redis unreachable at start ({shown}: {e}); retrying with backoff; /health says degraded meanwhile");
                } else {
                    tracing::debug!(url = %shown, error = %e, "pub/sub: Redis still unreachable");
                }
            }
        }
        first = false;
        // Meanwhile what is published here has nowhere to go.
        let pause = tokio::time::sleep(delay);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                out = outbound.recv() => match out {
                    Some(out) => inner.discard(out),
                    None => return,
                },
            }
        }
        delay = (delay * 2).min(LAST_RETRY);
    }
}

async fn connect(
    client: &redis::Client,
) -> Result<(MultiplexedConnection, PubSubSink, PubSubStream), String> {
    let both = async {
        let publisher = client.get_multiplexed_async_connection().await?;
        let (sink, stream) = client.get_async_pubsub().await?.split();
        Ok::<_, redis::RedisError>((publisher, sink, stream))
    };
    match tokio::time::timeout(PATIENCE, both).await {
        Ok(Ok(link)) => Ok(link),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {} s", PATIENCE.as_secs())),
    }
}

/// Serves one connected pair until it fails (`Some(why)`) or the worker's
/// pub/sub is gone (`None`).
async fn session(
    inner: &Inner,
    mut publisher: MultiplexedConnection,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    outbound: &mut mpsc::UnboundedReceiver<Out>,
) -> Option<String> {
    let mut told = Told::default();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Subscriptions made before this connection (or before a reconnect).
    if let Err(e) = reconcile(inner, &mut sink, &mut told).await {
        return Some(e);
    }
    loop {
        tokio::select! {
            biased;
            // Before any publish taken below: a subscriber that announces
            // itself must be subscribed before the announcement leaves.
            () = inner.changed.notified() => {
                if let Err(e) = reconcile(inner, &mut sink, &mut told).await {
                    return Some(e);
                }
            }
            message = stream.next() => match message {
                Some(message) => receive(inner, &message),
                None => return Some("connection closed".into()),
            },
            out = outbound.recv() => {
                let out = out?;
                if let Err(e) = publish(inner, &mut publisher, &mut sink, &mut told, out, outbound).await {
                    return Some(e);
                }
            }
            _ = ping.tick() => {
                // Both connections: a quiet subscriber connection that a
                // middlebox dropped would otherwise go unnoticed.
                let ping = redis::cmd("PING");
                let pongs = async {
                    ping.query_async::<()>(&mut publisher).await?;
                    sink.ping::<()>().await
                };
                match tokio::time::timeout(PATIENCE, pongs).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Some(e.to_string()),
                    Err(_) => return Some(format!("no answer to PING in {} s", PATIENCE.as_secs())),
                }
            }
        }
    }
}

async fn reconcile(inner: &Inner, sink: &mut PubSubSink, told: &mut Told) -> Result<(), String> {
    let change = told.change(inner);
    let add: Vec<String> = change.add.iter().map(|t| channel(t)).collect();
    let remove: Vec<String> = change.remove.iter().map(|t| channel(t)).collect();
    let sent = async {
        if !add.is_empty() {
            sink.subscribe(&add).await?;
        }
        if !remove.is_empty() {
            sink.unsubscribe(&remove).await?;
        }
        Ok::<(), redis::RedisError>(())
    };
    match tokio::time::timeout(PATIENCE, sent).await {
        Ok(Ok(())) => {
            told.settle(change);
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer to SUBSCRIBE in {} s",
            PATIENCE.as_secs()
        )),
    }
}

/// Sends `first` and whatever else is queued (up to [`BATCH`]) as one
/// pipeline, in order; subscriptions made before any of them (on any
/// thread) are confirmed first.
async fn publish(
    inner: &Inner,
    publisher: &mut MultiplexedConnection,
    sink: &mut PubSubSink,
    told: &mut Told,
    first: Out,
    outbound: &mut mpsc::UnboundedReceiver<Out>,
) -> Result<(), String> {
    let batch = inner.take_batch(Some(first), outbound, BATCH);
    let count = batch.count();
    let mut pipe = redis::pipe();
    for (topic, message) in &batch.publishes {
        let mut payload = Vec::with_capacity(inner.node.len() + message.len());
        payload.extend_from_slice(inner.node.as_bytes());
        payload.extend_from_slice(message);
        pipe.cmd("PUBLISH")
            .arg(channel(topic))
            .arg(payload)
            .ignore();
    }
    if told.stale(inner) {
        if let Err(e) = reconcile(inner, sink, told).await {
            inner.count_lost(count);
            return Err(e);
        }
    }
    if count > 0 {
        match tokio::time::timeout(PATIENCE, pipe.query_async::<()>(publisher)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                inner.count_lost(count);
                return Err(e.to_string());
            }
            Err(_) => {
                inner.count_lost(count);
                return Err(format!("no answer to PUBLISH in {} s", PATIENCE.as_secs()));
            }
        }
    }
    batch.written();
    Ok(())
}

/// A message from Redis, for this worker's subscribers unless it
/// published it itself.
fn receive(inner: &Inner, message: &redis::Msg) {
    let Some(topic) = message.get_channel_name().strip_prefix(PREFIX) else {
        return;
    };
    let payload = message.get_payload_bytes();
    let Some((node, body)) = payload.split_at_checked(inner.node.len()) else {
        return;
    };
    if node == inner.node.as_bytes() {
        return;
    }
    inner.deliver(topic.as_bytes(), Bytes::copy_from_slice(body));
}

fn channel(topic: &str) -> String {
    format!("{PREFIX}{topic}")
}
