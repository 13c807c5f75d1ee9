//! The embedded hub: the supervisor's relay of pub/sub messages between
//! its workers, on a thread of its own.
//!
//! Every worker gets one end of a socket pair at spawn ([`Hub::attach`]),
//! beside its control socket and never on it: chat traffic and supervision
//! share no channel, no queue and no thread, so a flood of messages cannot
//! delay a heartbeat, the watchdog, `STATUS=` or a reload. Workers of every
//! generation are attached alike, so while a reload overlaps two
//! generations their members hear each other.
//!
//! A worker says which topics it wants; a message goes only to the other
//! workers that want its topic, as the frame it came in (encoded once).
//! Each worker's outgoing queue has a byte budget ([`QUEUE_BUDGET`]): a
//! worker that stops reading loses messages (counted and logged), it never
//! grows the supervisor's memory or slows the others.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::wire::{self, Frame};

/// Bytes queued for one worker before messages to it are dropped.
pub const QUEUE_BUDGET: usize = 8 * 1024 * 1024;
/// Least time between two warnings about the same worker's drops.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The supervisor's handle on the hub thread.
pub struct Hub {
    workers: mpsc::UnboundedSender<(Name, StdUnixStream)>,
}

/// Which worker a peer is, for the log: slot and generation.
#[derive(Clone, Copy, Debug)]
struct Name {
    slot: usize,
    generation: u64,
}

impl Hub {
    /// Starts the hub's thread.
    ///
    /// # Errors
    /// The thread or its runtime cannot be created.
    pub fn start() -> io::Result<Hub> {
        let (workers, arrivals) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        std::thread::Builder::new()
            .name("pubsub-hub".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, serve(arrivals));
            })?;
        Ok(Hub { workers })
    }

    /// A new socket pair: the hub keeps one end, the worker to be spawned
    /// gets the returned one. If the spawn fails, dropping it detaches.
    ///
    /// # Errors
    /// No socket pair could be made (descriptor limit).
    pub fn attach(&self, slot: usize, generation: u64) -> io::Result<OwnedFd> {
        let (ours, theirs) = StdUnixStream::pair()?;
        ours.set_nonblocking(true)?;
        // The thread is gone only if it panicked: the worker then runs on
        // its own, and its pub/sub reports itself degraded.
        let _ = self.workers.send((Name { slot, generation }, ours));
        Ok(OwnedFd::from(theirs))
    }
}

/// One attached worker, as the routing table sees it.
struct Peer {
    queue: mpsc::UnboundedSender<Bytes>,
    queued: Rc<Cell<usize>>,
    dropped: u64,
    warned: Option<Instant>,
    name: Name,
}

#[derive(Default)]
struct Table {
    peers: HashMap<u64, Peer>,
    topics: HashMap<Bytes, HashSet<u64>>,
}

impl Table {
    fn forward(&mut self, from: u64, topic: &[u8], frame: &Bytes) {
        let Some(ids) = self.topics.get(topic) else {
            return;
        };
        for id in ids {
            if *id == from {
                continue;
            }
            let Some(peer) = self.peers.get_mut(id) else {
                continue;
            };
            let queued = peer.queued.get();
            if queued + frame.len() > QUEUE_BUDGET || peer.queue.send(frame.clone()).is_err() {
                peer.dropped += 1;
                if peer.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    peer.warned = Some(Instant::now());
                    let (slot, generation, dropped) =
                        (peer.name.slot, peer.name.generation, peer.dropped);
                    tracing::warn!(
                        slot,
                        generation,
                        dropped,
                        "pub/sub hub: worker {slot} (generation {generation}) is not reading its messages; {dropped} dropped so far"
                    );
                }
            } else {
                peer.queued.set(queued + frame.len());
            }
        }
    }

    fn leave(&mut self, id: u64) {
        self.peers.remove(&id);
        self.topics.retain(|_, ids| {
            ids.remove(&id);
            !ids.is_empty()
        });
    }
}

async fn serve(mut arrivals: mpsc::UnboundedReceiver<(Name, StdUnixStream)>) {
    let table = Rc::new(RefCell::new(Table::default()));
    let mut next = 0u64;
    while let Some((name, stream)) = arrivals.recv().await {
        next += 1;
        match UnixStream::from_std(stream) {
            Ok(stream) => {
                tokio::task::spawn_local(peer(next, name, stream, table.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "pub/sub hub: cannot register a worker's socket: {e}")
            }
        }
    }
}

/// Serves one worker until its end closes (it exited).
async fn peer(id: u64, name: Name, stream: UnixStream, table: Rc<RefCell<Table>>) {
    let (read, write) = stream.into_split();
    let (queue, mut outgoing) = mpsc::unbounded_channel::<Bytes>();
    let queued = Rc::new(Cell::new(0usize));
    table.borrow_mut().peers.insert(
        id,
        Peer {
            queue,
            queued: queued.clone(),
            dropped: 0,
            warned: None,
            name,
        },
    );
    let writer = tokio::task::spawn_local(async move {
        let mut sink = FramedWrite::new(write, wire::codec());
        while let Some(frame) = outgoing.recv().await {
            let mut batch = vec![frame];
            while let Ok(more) = outgoing.try_recv() {
                batch.push(more);
            }
            let size: usize = batch.iter().map(Bytes::len).sum();
            for frame in batch {
                if sink.feed(frame).await.is_err() {
                    return;
                }
            }
            queued.set(queued.get() - size);
            if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
                return;
            }
        }
    });
    let mut frames = FramedRead::new(read, wire::codec());
    while let Some(Ok(frame)) = frames.next().await {
        let frame = frame.freeze();
        let mut table = table.borrow_mut();
        match wire::decode(&frame) {
            Some(Frame::Publish { topic, .. }) => table.forward(id, topic, &frame),
            Some(Frame::Subscribe(topic)) => {
                let topic = frame.slice_ref(topic);
                table.topics.entry(topic).or_default().insert(id);
            }
            Some(Frame::Unsubscribe(topic)) => {
                if let Some(ids) = table.topics.get_mut(topic) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        table.topics.remove(topic);
                    }
                }
            }
            None => {
                let (slot, generation) = (name.slot, name.generation);
                tracing::error!(
                    slot,
                    generation,
                    "pub/sub hub: malformed frame from worker {slot} (generation {generation}); detaching it"
                );
                break;
            }
        }
    }
    table.borrow_mut().leave(id);
    writer.abort();
}
