//! Bench-only chat fan-out load generator for `scripts/bench`.
//!
//!   fanout ADDR ROOM MEMBERS MESSAGES RATE
//!
//! Connects MEMBERS WebSocket clients to `ws://ADDR/chat/ROOM`, one after
//! another, and waits until the room is whole: every member has its
//! welcome and the join notices of itself and of every member that
//! connected after it (a member hears only joins after its own
//! subscription). Then every member sends MESSAGES text messages at RATE a
//! second, each `"<member index> <seq> <ns since a shared Instant>"`, and
//! reads everything the room says: each of the MEMBERS × MEMBERS × MESSAGES
//! deliveries is timed from its send (all members share one process, so
//! one monotonic clock). Prints one JSON line: delivered, duplicates, out of
//! order (per sender), delivered/s from the first send to the last
//! delivery, p50/p99/max latency, and whether the room was whole (`ready`)
//! before sending started.
//!
//! Pacing: a `tokio::time::interval` per member with
//! `MissedTickBehavior::Burst`, so the offered load stays MEMBERS × RATE a
//! second even when the client falls behind (late messages go out in a
//! burst and `send_seconds` grows past (MESSAGES-1)/RATE); the members'
//! intervals are staggered across one period so the room's sends are spread
//! out, not 40 at once. Latency is from the moment a message is written,
//! so a client that falls behind shows up in `send_seconds`, not in it.
//!
//! Bounded: at most 15 s to assemble the room (then it sends anyway, with
//! `"ready":false`), reading stops 10 s after the last send or when every
//! member has all its messages, and the whole run stops at 120 s.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const CAP: Duration = Duration::from_secs(120);
/// How long the room may take to assemble.
const ASSEMBLE: Duration = Duration::from_secs(15);
/// How long reading goes on after the last send.
const DRAIN: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

/// What the server says, borrowed from the frame where it can be.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    member: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

/// One member's reading, once it stops.
struct Heard {
    latencies: Vec<u64>,
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Messages whose text was not ours (another client in the room).
    foreign: u64,
    /// Nanoseconds since the base of the last delivery.
    last_ns: u64,
    /// The connection ended before reading stopped.
    error: bool,
}

struct Shared {
    base: Instant,
    members: usize,
    messages: usize,
    /// Members that have heard every join they will hear.
    ready: Cell<usize>,
    ready_changed: tokio::sync::Notify,
}

async fn connect(addr: &str, room: &str) -> Result<Ws, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/chat/{room}"), stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Member `index` reads until it has every message or `stop` turns true.
async fn read(
    index: usize,
    shared: Rc<Shared>,
    mut stream: SplitStream<Ws>,
    welcomed: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> Heard {
    let (members, messages) = (shared.members, shared.messages);
    let expected = (members * messages) as u64;
    let joins_expected = members - index;
    let mut welcomed = Some(welcomed);
    let mut joins: HashSet<String> = HashSet::new();
    let mut seen = vec![false; members * messages];
    let mut last_seq = vec![None::<usize>; members];
    let mut heard = Heard {
        latencies: Vec::with_capacity(members * messages),
        delivered: 0,
        duplicates: 0,
        out_of_order: 0,
        foreign: 0,
        last_ns: 0,
        error: false,
    };
    while heard.delivered < expected {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = stop.wait_for(|s| *s) => break,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                heard.error = true;
                break;
            }
            Some(Ok(_)) => continue,
        };
        let now = shared.base.elapsed().as_nanos() as u64;
        let Ok(event) = serde_json::from_str::<Event>(&text) else {
            heard.foreign += 1;
            continue;
        };
        match &*event.kind {
            "message" => {
                let parsed = event.text.as_deref().and_then(|t| {
                    let mut f = t.split_ascii_whitespace().map(str::parse::<u64>);
                    match (f.next(), f.next(), f.next()) {
                        (Some(Ok(from)), Some(Ok(seq)), Some(Ok(sent))) => {
                            Some((from as usize, seq as usize, sent))
                        }
                        _ => None,
                    }
                });
                let Some((from, seq, sent)) =
                    parsed.filter(|&(from, seq, _)| from < members && seq < messages)
                else {
                    heard.foreign += 1;
                    continue;
                };
                let slot = &mut seen[from * messages + seq];
                if *slot {
                    heard.duplicates += 1;
                    continue;
                }
                *slot = true;
                if last_seq[from].is_some_and(|last| seq < last) {
                    heard.out_of_order += 1;
                } else {
                    last_seq[from] = Some(seq);
                }
                heard.delivered += 1;
                heard.latencies.push(now.saturating_sub(sent));
                heard.last_ns = now;
            }
            "welcome" => {
                if let Some(w) = welcomed.take() {
                    let _ = w.send(());
                }
            }
            "join" => {
                if let Some(member) = event.member {
                    if joins.len() < joins_expected
                        && joins.insert(member.into_owned())
                        && joins.len() == joins_expected
                    {
                        shared.ready.set(shared.ready.get() + 1);
                        shared.ready_changed.notify_one();
                    }
                }
            }
            _ => {}
        }
    }
    heard
}

/// Member `index` sends its messages, paced, unless `stop` turns true.
/// Returns the sink (to close), how many went out, and the times of its
/// first and last send.
async fn send(
    index: usize,
    shared: Rc<Shared>,
    mut sink: SplitSink<Ws, Message>,
    start: tokio::time::Instant,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> (SplitSink<Ws, Message>, usize, Option<(u64, u64)>) {
    let offset = period.mul_f64(index as f64 / shared.members as f64);
    let mut ticks = tokio::time::interval_at(start + offset, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sent = 0;
    let mut span = None::<(u64, u64)>;
    for seq in 0..shared.messages {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = shared.base.elapsed().as_nanos() as u64;
        let text = format!("{index} {seq} {now}");
        let written = tokio::select! {
            r = sink.send(Message::text(text)) => r.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        };
        if !written {
            break;
        }
        sent += 1;
        span = Some(span.map_or((now, now), |(first, _)| (first, now)));
    }
    (sink, sent, span)
}

async fn run(addr: String, room: String, members: usize, messages: usize, rate: f64) {
    let began = tokio::time::Instant::now();
    let shared = Rc::new(Shared {
        base: Instant::now(),
        members,
        messages,
        ready: Cell::new(0),
        ready_changed: tokio::sync::Notify::new(),
    });
    let (stop_tx, stop) = watch::channel(false);
    // One member at a time, each welcomed (subscribed) before the next
    // connects, so member i hears the joins of i and everyone after.
    let mut sinks = Vec::with_capacity(members);
    let mut readers = Vec::with_capacity(members);
    for index in 0..members {
        let connected = tokio::time::timeout_at(began + ASSEMBLE, connect(&addr, &room)).await;
        let ws = match connected {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                eprintln!("fanout: member {index} failed to connect: {e}");
                break;
            }
            Err(_) => {
                eprintln!("fanout: member {index} not connected within {ASSEMBLE:?}");
                break;
            }
        };
        let (sink, stream) = ws.split();
        let (welcomed_tx, welcomed) = oneshot::channel();
        readers.push(tokio::task::spawn_local(read(
            index,
            shared.clone(),
            stream,
            welcomed_tx,
            stop.clone(),
        )));
        sinks.push(sink);
        if tokio::time::timeout_at(began + ASSEMBLE, welcomed)
            .await
            .is_err()
        {
            eprintln!("fanout: member {index} got no welcome");
        }
    }
    let connected = sinks.len();
    // The room is whole when every member has heard its joins.
    let whole = async {
        while shared.ready.get() < connected {
            shared.ready_changed.notified().await;
        }
    };
    let ready = connected == members
        && tokio::time::timeout_at(began + ASSEMBLE, whole)
            .await
            .is_ok();
    if !ready {
        eprintln!(
            "fanout: room not whole after {ASSEMBLE:?}: {} of {members} members heard every join",
            shared.ready.get()
        );
    }

    // The cap: whatever is still running stops 5 s before the outer one.
    let cap_stop = stop_tx.clone();
    tokio::task::spawn_local(async move {
        tokio::time::sleep_until(began + CAP - Duration::from_secs(5)).await;
        let _ = cap_stop.send(true);
    });

    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let senders: Vec<_> = sinks
        .into_iter()
        .enumerate()
        .map(|(index, sink)| {
            tokio::task::spawn_local(send(
                index,
                shared.clone(),
                sink,
                start,
                period,
                stop.clone(),
            ))
        })
        .collect();
    let mut sinks = Vec::with_capacity(connected);
    let mut sent = 0;
    let (mut first_send, mut last_send) = (u64::MAX, 0);
    for s in senders {
        if let Ok((sink, n, span)) = s.await {
            sinks.push(sink);
            sent += n;
            if let Some((first, last)) = span {
                first_send = first_send.min(first);
                last_send = last_send.max(last);
            }
        }
    }
    // Read until everything arrived, or DRAIN after the last send.
    let drain_until =
        tokio::time::Instant::from_std(shared.base + Duration::from_nanos(last_send)) + DRAIN;
    let stopper = stop_tx.clone();
    tokio::task::spawn_local(async move {
        tokio::time::sleep_until(drain_until).await;
        let _ = stopper.send(true);
    });
    let mut all = Vec::with_capacity(members * members * messages);
    let (mut delivered, mut duplicates, mut out_of_order, mut foreign, mut errors) =
        (0, 0, 0, 0, 0);
    let mut last_delivery = 0;
    for r in readers {
        if let Ok(heard) = r.await {
            all.extend(heard.latencies);
            delivered += heard.delivered;
            duplicates += heard.duplicates;
            out_of_order += heard.out_of_order;
            foreign += heard.foreign;
            errors += u64::from(heard.error);
            last_delivery = last_delivery.max(heard.last_ns);
        }
    }
    let _ = stop_tx.send(true);
    for mut sink in sinks {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }

    let seconds = if first_send == u64::MAX {
        0.0
    } else {
        last_delivery.saturating_sub(first_send) as f64 / 1e9
    };
    let send_seconds = if first_send == u64::MAX {
        0.0
    } else {
        (last_send - first_send) as f64 / 1e9
    };
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1e6)
    };
    let expected = members * members * messages;
    println!(
        "{{\"members\":{connected},\"ready\":{ready},\"sent\":{sent},\"expected\":{expected},\
         \"delivered\":{delivered},\"duplicates\":{duplicates},\"out_of_order\":{out_of_order},\
         \"foreign\":{foreign},\"errors\":{errors},\"send_seconds\":{send_seconds:.3},\
         \"seconds\":{seconds:.3},\"delivered_per_s\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\
         \"max_ms\":{:.3}}}",
        if seconds > 0.0 {
            delivered as f64 / seconds
        } else {
            0.0
        },
        pct(0.50),
        pct(0.99),
        all.last().map_or(0.0, |&ns| ns as f64 / 1e6),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: fanout ADDR ROOM MEMBERS MESSAGES RATE");
        std::process::exit(2);
    }
    let num = |i: usize| -> usize { args[i].parse().expect("numeric argument") };
    let rate: f64 = args[5].parse().expect("numeric RATE");
    assert!(
        rate > 0.0 && num(3) > 0,
        "MEMBERS and RATE must be positive"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let work = run(args[1].clone(), args[2].clone(), num(3), num(4), rate);
    if local
        .block_on(&runtime, async { tokio::time::timeout(CAP, work).await })
        .is_err()
    {
        eprintln!("fanout: stopped at the {CAP:?} cap");
    }
}
