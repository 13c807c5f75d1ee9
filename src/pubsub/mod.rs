//! Pub/sub for app code: [`PubSub`], reached as `ctx.pubsub` from every
//! handler, publishes bytes to a topic and hands out a [`Subscription`] per
//! subscriber, so a message published in one worker reaches subscribers in
//! every worker of the host (the embedded hub, the default) or of every
//! host (Redis, `pubsub_url = "redis://…"`).
//!
//! The guarantees, the same for both backends (the README states them for
//! users):
//! - at most once: a message is delivered once or not at all, never twice;
//! - each publisher's messages arrive in the order it published them;
//! - a subscriber more than [`SUBSCRIBER_BACKLOG`] messages behind skips
//!   ahead to the newest: what it missed is counted as `dropped`;
//! - what cannot leave the worker (its queue to the hub or Redis over
//!   [`OUTBOUND_BUDGET`] bytes, or Redis unreachable) is counted as
//!   `dropped` or `lost`, never kept without bound.
//!
//! Subscribers in the publishing worker get the message at once, from
//! memory; the backend carries it to the other workers (it never echoes a
//! message back to its publisher). Memory is bounded everywhere: messages
//! are at most [`MAX_MESSAGE`] bytes, each topic keeps a ring of
//! [`SUBSCRIBER_BACKLOG`], each queue has a byte budget.

mod embedded;
pub mod hub;
mod redis_link;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use crate::config::PubSubTarget;

/// Largest message, in bytes: what one frame to the hub may carry, and
/// what bounds every queue's worst case.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Longest topic name, in bytes.
pub const MAX_TOPIC: usize = 255;
/// Messages a subscriber may fall behind by before it skips ahead: a
/// burst of a thousand (twenty members saying fifty things at once) is
/// absorbed; the ring holds at most this many messages per topic.
pub const SUBSCRIBER_BACKLOG: usize = 2048;
/// Bytes of messages waiting to leave a worker (for the hub or Redis)
/// before further ones are dropped: a backend that cannot keep up costs
/// messages, not the worker's memory.
pub const OUTBOUND_BUDGET: usize = 4 * 1024 * 1024;

/// Why a message was not published.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("the message is {0} bytes; {MAX_MESSAGE} at most")]
    TooLarge(usize),
    #[error("topic names are 1 to {MAX_TOPIC} bytes")]
    BadTopic,
}

/// The pub/sub handle of one worker; cheap to clone.
#[derive(Clone)]
pub struct PubSub(Arc<Inner>);

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("backend", &self.0.backend)
            .finish_non_exhaustive()
    }
}

/// Which backend carries messages beyond this worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The supervisor's hub: every worker of this host.
    Embedded,
    /// Redis pub/sub: every worker of every host using the same server.
    Redis,
    /// This worker only: started without a hub socket (by an older
    /// supervisor, during an upgrade's first reload).
    Local,
}

impl Backend {
    /// The name `/health` gives it (the same as its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Redis => "redis",
            Backend::Local => "local",
        }
    }
}

pub(crate) struct Inner {
    backend: Backend,
    /// This process's id among publishers: random, so two hosts differ.
    node: String,
    /// Topics with subscribers here, each with its ring of messages.
    topics: Mutex<HashMap<Arc<str>, broadcast::Sender<Bytes>>>,
    /// Rung when `topics` gains or loses a key, for the backend link.
    changed: Notify,
    /// Bumped (under the `topics` lock) when it does: a link that drains
    /// publishes checks it before writing them, so a subscription made
    /// before a publish, on any thread, always goes out first.
    version: AtomicU64,
    outbound: Option<Outbound>,
    /// Whether the backend is reachable (never for `Local`: its messages
    /// reach this worker only, which `/health` says as "degraded").
    connected: AtomicBool,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    lost: AtomicU64,
}

/// What the worker's link to its backend takes, in order.
pub(crate) enum Out {
    Publish {
        topic: Arc<str>,
        message: Bytes,
    },
    /// Answered once everything queued before it has been written.
    Flush(oneshot::Sender<()>),
}

/// The topics a link has told its backend it wants, as of which version
/// of the worker's topics: one link, one `Told`.
#[derive(Default)]
struct Told {
    topics: HashSet<Arc<str>>,
    version: Option<u64>,
}

/// What a link must tell its backend to match the worker's topics now.
struct Change {
    add: Vec<Arc<str>>,
    remove: Vec<Arc<str>>,
    topics: HashSet<Arc<str>>,
    version: u64,
}

impl Told {
    /// Whether the worker's topics changed since they were last told.
    fn stale(&self, inner: &Inner) -> bool {
        self.version.is_none_or(|v| inner.changed_since(v))
    }

    fn change(&self, inner: &Inner) -> Change {
        let (topics, version) = inner.wanted();
        Change {
            add: topics.difference(&self.topics).cloned().collect(),
            remove: self.topics.difference(&topics).cloned().collect(),
            topics,
            version,
        }
    }

    /// Records `change` as told (once the backend has it).
    fn settle(&mut self, change: Change) {
        self.topics = change.topics;
        self.version = Some(change.version);
    }
}

/// Publishes taken off the queue together, with the flushes among them
/// (answered once they are written).
#[derive(Default)]
struct Batch {
    publishes: Vec<(Arc<str>, Bytes)>,
    flushed: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn count(&self) -> u64 {
        self.publishes.len() as u64
    }

    /// Tells the flushes everything before them is out.
    fn written(self) {
        for done in self.flushed {
            let _ = done.send(());
        }
    }
}

struct Outbound {
    tx: mpsc::UnboundedSender<Out>,
    /// Bytes queued in `tx`, kept under [`OUTBOUND_BUDGET`].
    queued: AtomicUsize,
}

/// `/health`'s view of pub/sub.
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    pub backend: Backend,
    /// "ok", or "degraded" while the hub or Redis is unreachable: messages
    /// then reach this worker's subscribers only.
    pub state: &'static str,
    /// Messages published in this worker.
    pub published: u64,
    /// Messages handed to this worker's subscribers.
    pub delivered: u64,
    /// Messages a slow subscriber skipped, or a full queue refused.
    pub dropped: u64,
    /// Messages published while the backend was unreachable: delivered in
    /// this worker only.
    pub lost: u64,
}

impl PubSub {
    /// Starts this worker's pub/sub on `target`; `hub` is the worker's end
    /// of the supervisor's hub socket, if it was given one. Must run inside
    /// the worker's runtime.
    pub(crate) fn start(
        target: PubSubTarget,
        hub: Option<std::os::unix::net::UnixStream>,
    ) -> PubSub {
        let (backend, link) = match (target, hub) {
            (PubSubTarget::Embedded, Some(stream)) => (Backend::Embedded, Some(Link::Hub(stream))),
            (PubSubTarget::Embedded, None) => {
                tracing::warn!("no pub/sub hub socket from the supervisor (an older one started this worker): messages reach this worker's subscribers only until the next restart");
                (Backend::Local, None)
            }
            (PubSubTarget::Redis(url), _) => (Backend::Redis, Some(Link::Redis(url))),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            backend,
            node: node_id(),
            topics: Mutex::default(),
            changed: Notify::new(),
            version: AtomicU64::new(0),
            outbound: link.is_some().then(|| Outbound {
                tx,
                queued: AtomicUsize::new(0),
            }),
            // A link reports itself once connected; `Local` never is.
            connected: AtomicBool::new(false),
            stats: Stats::default(),
        });
        match link {
            Some(Link::Hub(stream)) => embedded::start(inner.clone(), stream, rx),
            Some(Link::Redis(url)) => redis_link::start(inner.clone(), url, rx),
            None => {}
        }
        PubSub(inner)
    }

    /// Publishes `message` to every subscriber of `topic`, here and
    /// wherever the backend reaches. Never waits: what cannot be queued is
    /// counted as dropped (see the module's guarantees).
    ///
    /// # Errors
    /// A message over [`MAX_MESSAGE`] bytes, or an empty or over-long topic.
    pub fn publish(&self, topic: &str, message: impl Into<Bytes>) -> Result<(), PublishError> {
        let message = message.into();
        check_topic(topic)?;
        if message.len() > MAX_MESSAGE {
            return Err(PublishError::TooLarge(message.len()));
        }
        let inner = &self.0;
        inner.stats.published.fetch_add(1, Ordering::Relaxed);
        let topic: Arc<str> = {
            let topics = inner.lock_topics();
            match topics.get_key_value(topic) {
                Some((key, tx)) => {
                    // No receiver is no error: the last one left meanwhile.
                    let _ = tx.send(message.clone());
                    key.clone()
                }
                None => Arc::from(topic),
            }
        };
        if let Some(out) = &inner.outbound {
            let cost = message.len() + topic.len();
            let queued = out.queued.fetch_add(cost, Ordering::Relaxed);
            if queued + cost > OUTBOUND_BUDGET {
                out.queued.fetch_sub(cost, Ordering::Relaxed);
                inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
            } else if out.tx.send(Out::Publish { topic, message }).is_err() {
                out.queued.fetch_sub(cost, Ordering::Relaxed);
                inner.stats.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Subscribes to `topic`: the subscription gets every message published
    /// to it from now on, here or elsewhere, until dropped.
    ///
    /// # Errors
    /// An empty or over-long topic.
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, PublishError> {
        check_topic(topic)?;
        let mut topics = self.0.lock_topics();
        let receiver = match topics.get(topic) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(SUBSCRIBER_BACKLOG);
                topics.insert(Arc::from(topic), tx);
                self.0.version.fetch_add(1, Ordering::SeqCst);
                self.0.changed.notify_one();
                rx
            }
        };
        Ok(Subscription {
            pubsub: self.0.clone(),
            topic: Arc::from(topic),
            receiver: Some(receiver),
        })
    }

    /// This process's publisher id: random hex, distinct across hosts.
    pub fn node(&self) -> &str {
        &self.0.node
    }

    /// The figures `/health` shows.
    pub fn health(&self) -> Health {
        let s = &self.0.stats;
        Health {
            backend: self.0.backend,
            state: if self.0.connected.load(Ordering::Relaxed) {
                "ok"
            } else {
                "degraded"
            },
            published: s.published.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
        }
    }

    /// Waits (at most `limit`) until what was published before has left
    /// this worker, so a draining worker's last messages are not cut off.
    pub async fn flush(&self, limit: std::time::Duration) {
        let Some(out) = &self.0.outbound else { return };
        let (tx, rx) = oneshot::channel();
        if out.tx.send(Out::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

enum Link {
    Hub(std::os::unix::net::UnixStream),
    Redis(String),
}

impl Inner {
    fn lock_topics(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, broadcast::Sender<Bytes>>> {
        // A panic while holding the lock leaves the map consistent (every
        // operation on it is a single insert, remove or lookup).
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The topics subscribed here now, for the backend link to match,
    /// with the version they are at.
    fn wanted(&self) -> (HashSet<Arc<str>>, u64) {
        let topics = self.lock_topics();
        let version = self.version.load(Ordering::SeqCst);
        (topics.keys().cloned().collect(), version)
    }

    /// Whether the topics changed since `version`.
    fn changed_since(&self, version: u64) -> bool {
        self.version.load(Ordering::SeqCst) != version
    }

    /// A message from the backend, for this worker's subscribers.
    fn deliver(&self, topic: &[u8], message: Bytes) {
        let Ok(topic) = std::str::from_utf8(topic) else {
            return;
        };
        if let Some(tx) = self.lock_topics().get(topic) {
            let _ = tx.send(message);
        }
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    /// Called by the link for each message it has written (or given up on).
    fn dequeued(&self, topic: &str, message: &Bytes) {
        if let Some(out) = &self.outbound {
            out.queued
                .fetch_sub(message.len() + topic.len(), Ordering::Relaxed);
        }
    }

    /// `first` and whatever else is queued now, up to `limit` publishes,
    /// taken off the queue (its budget released) in order.
    fn take_batch(
        &self,
        first: Option<Out>,
        outbound: &mut mpsc::UnboundedReceiver<Out>,
        limit: usize,
    ) -> Batch {
        let mut batch = Batch::default();
        let mut next = first;
        loop {
            match next {
                Some(Out::Publish { topic, message }) => {
                    self.dequeued(&topic, &message);
                    batch.publishes.push((topic, message));
                }
                Some(Out::Flush(done)) => batch.flushed.push(done),
                None => {}
            }
            if batch.publishes.len() >= limit {
                return batch;
            }
            match outbound.try_recv() {
                Ok(more) => next = Some(more),
                Err(_) => return batch,
            }
        }
    }

    /// What a link without a backend does with a queued item: a publish is
    /// lost (counted), a flush is answered at once.
    fn discard(&self, out: Out) {
        match out {
            Out::Publish { topic, message } => {
                self.dequeued(&topic, &message);
                self.count_lost(1);
            }
            Out::Flush(done) => {
                let _ = done.send(());
            }
        }
    }

    fn lost(&self) -> u64 {
        self.stats.lost.load(Ordering::Relaxed)
    }

    fn count_lost(&self, n: u64) {
        self.stats.lost.fetch_add(n, Ordering::Relaxed);
    }
}

fn check_topic(topic: &str) -> Result<(), PublishError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC {
        return Err(PublishError::BadTopic);
    }
    Ok(())
}

/// 16 hex digits from the process id, the clock and std's per-process
/// random hash keys: unique enough across a fleet's processes.
fn node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(now.as_nanos());
    }
    format!("{:016x}", h.finish())
}

/// Messages published to one topic, from the moment of subscribing; stops
/// the worker's interest in the topic when the last one is dropped.
pub struct Subscription {
    pubsub: Arc<Inner>,
    topic: Arc<str>,
    receiver: Option<broadcast::Receiver<Bytes>>,
}

impl Subscription {
    /// The next message; a subscriber that fell more than
    /// [`SUBSCRIBER_BACKLOG`] behind skips to the oldest one still kept,
    /// and the skipped ones are counted as dropped.
    pub async fn recv(&mut self) -> Bytes {
        let receiver = self.receiver.as_mut().expect("present until drop");
        loop {
            match receiver.recv().await {
                Ok(message) => {
                    self.pubsub.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return message;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.pubsub
                        .stats
                        .dropped
                        .fetch_add(missed, Ordering::Relaxed);
                    tracing::debug!(topic = %self.topic, missed, "pub/sub subscriber fell behind; skipping ahead");
                }
                // The topic's sender lives in the map while any
                // subscription to it does, this one included.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }

    /// The subscription as a stream of messages.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Bytes> + Send {
        futures_util::stream::unfold(self, |mut sub| async move {
            let message = sub.recv().await;
            Some((message, sub))
        })
    }

    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut topics = self.pubsub.lock_topics();
        drop(self.receiver.take());
        if topics
            .get(&self.topic)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            topics.remove(&self.topic);
            self.pubsub.version.fetch_add(1, Ordering::SeqCst);
            self.pubsub.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;
