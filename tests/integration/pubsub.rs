//! Pub/sub across workers and hosts, through `/chat/{room}`: the embedded
//! hub reaching every worker (and both generations during a reload), a
//! flood that must not delay supervision, and real Redis (Debian's
//! `redis-server`, started here on a free loopback port) shared by two
//! ferricorn instances, stopped and restarted under them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// One member of a room, and which worker holds its connection (asked of
/// `/health` on the same connection before the upgrade).
struct Member {
    ws: Ws,
    id: String,
    pid: u64,
    generation: u64,
}

/// A parsed chat event.
#[derive(Debug)]
enum Event {
    Join(String),
    Leave,
    Said { from: String, text: String },
}

fn parse(text: &str) -> Event {
    let v: serde_json::Value = serde_json::from_str(text).expect("chat events are JSON");
    let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    match v["type"].as_str() {
        Some("join") => Event::Join(field("member")),
        Some("leave") => Event::Leave,
        Some("message") => Event::Said {
            from: field("from"),
            text: field("text"),
        },
        _ => panic!("unexpected event {text}"),
    }
}

/// Asks `/health` on a fresh keep-alive connection, then upgrades that same
/// connection to `/chat/{room}`: the member's worker is the one that
/// answered.
async fn join(addr: SocketAddr, room: &str) -> Member {
    try_join(addr, room).await.expect("joined")
}

/// [`join`], or `None` if the worker closed the connection before the
/// welcome: it began draining in between (a reload), and the client
/// should join again, as a browser's reconnect logic does.
async fn try_join(addr: SocketAddr, room: &str) -> Option<Member> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("health head"));
    }
    let head = parse_head(&String::from_utf8_lossy(&head)).expect("health head");
    let length = head.content_length.expect("content-length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // A worker that began draining after answering closes the idle
    // keep-alive connection instead: join again, as a client would.
    let Ok((mut ws, response)) =
        tokio_tungstenite::client_async(format!("ws://{addr}/chat/{room}"), stream).await
    else {
        return None;
    };
    assert_eq!(response.status(), 101);
    let welcome = loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("welcome in time")
        {
            Some(Ok(Message::Text(text))) => break text,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| f.code);
                assert_eq!(code, Some(CloseCode::Restart), "closed before the welcome");
                return None;
            }
            Some(Ok(_)) => {}
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    };
    let welcome: serde_json::Value = serde_json::from_str(&welcome).unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["room"], room);
    // Where it landed, as /health names it (a fleet's clients tell hosts apart).
    assert_eq!(welcome["pid"], health["pid"], "{welcome}");
    assert_eq!(welcome["host"], health["host"], "{welcome}");
    Some(Member {
        ws,
        id: welcome["member"].as_str().unwrap().to_owned(),
        pid: health["pid"].as_u64().unwrap(),
        generation: health["generation"].as_u64().unwrap(),
    })
}

/// `count` members of `room`, `count / workers` on each worker: members
/// landing on a worker that already has its share leave again.
async fn spread(addr: SocketAddr, room: &str, count: usize, workers: usize) -> Vec<Member> {
    let share = count / workers;
    let mut members: Vec<Member> = Vec::new();
    let mut per: HashMap<u64, usize> = HashMap::new();
    let start = Instant::now();
    while members.len() < count {
        assert!(
            start.elapsed() < PATIENCE,
            "members spread over {per:?} only"
        );
        let member = join(addr, room).await;
        let held = per.entry(member.pid).or_default();
        if *held < share {
            *held += 1;
            members.push(member);
        } else {
            let mut ws = member.ws;
            let _ = ws.close(None).await;
        }
    }
    assert_eq!(per.len(), workers, "{per:?}");
    members
}

/// Waits until every member has heard the join of every member after it:
/// then every member's subscription is in place everywhere (a join is
/// published after its member subscribed, and a worker's subscription
/// reaches the hub or Redis before its publishes do).
async fn settle(members: &mut [Member]) {
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    for (i, member) in members.iter_mut().enumerate() {
        let mut missing: HashSet<&str> = ids[i..].iter().map(String::as_str).collect();
        while !missing.is_empty() {
            if let Event::Join(id) = parse(&next_text(&mut member.ws).await) {
                missing.remove(id.as_str());
            }
        }
    }
}

/// Every member sends `each` messages ("<index> <seq>") while reading;
/// returns, per member, the (sender index, seq) pairs it heard, in order,
/// once each has heard `expected` messages (or `PATIENCE` passed).
async fn converse(members: Vec<Member>, each: usize, expected: usize) -> Vec<Vec<(usize, usize)>> {
    let mut tasks = Vec::new();
    for (index, member) in members.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = member.ws.split();
            let send = async move {
                for seq in 0..each {
                    tx.send(Message::text(format!("{index} {seq}")))
                        .await
                        .unwrap();
                }
                tx
            };
            let receive = async move {
                let mut heard = Vec::new();
                let deadline = tokio::time::Instant::now() + PATIENCE;
                while heard.len() < expected {
                    let next = tokio::time::timeout_at(deadline, rx.next()).await;
                    let Ok(Some(Ok(message))) = next else { break };
                    let Message::Text(text) = message else {
                        continue;
                    };
                    if let Event::Said { text, .. } = parse(&text) {
                        let (i, s) = text.split_once(' ').unwrap();
                        heard.push((i.parse().unwrap(), s.parse().unwrap()));
                    }
                }
                heard
            };
            let (_tx, heard) = tokio::join!(send, receive);
            heard
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// Each member heard each of the `senders` × `each` messages exactly once,
/// every sender's in order.
fn assert_exactly_once_in_order(heard: &[Vec<(usize, usize)>], senders: usize, each: usize) {
    for (receiver, got) in heard.iter().enumerate() {
        let mut by_sender: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(sender, seq) in got {
            by_sender.entry(sender).or_default().push(seq);
        }
        let counts: Vec<usize> = (0..senders)
            .map(|s| by_sender.get(&s).map_or(0, Vec::len))
            .collect();
        for sender in 0..senders {
            let seqs = by_sender.get(&sender).cloned().unwrap_or_default();
            assert_eq!(
                seqs,
                (0..each).collect::<Vec<_>>(),
                "member {receiver} heard from member {sender}: {} messages, not 0..{each} once each in order (heard per sender: {counts:?})",
                seqs.len()
            );
        }
    }
}

#[test]
fn a_room_spans_every_worker_exactly_once_in_order() {
    let server = Server::ready(Options {
        workers: 4,
        ..Options::default()
    });
    let rt = runtime();
    let (members, count) = (20, 50);
    rt.block_on(async {
        let mut members = spread(server.addr, "lobby", members, 4).await;
        settle(&mut members).await;
        let heard = converse(members, count, 20 * count).await;
        assert_exactly_once_in_order(&heard, 20, count);
    });
    // Publishing from an ordinary handler reaches members on every worker.
    rt.block_on(async {
        let mut members = spread(server.addr, "news", 8, 4).await;
        settle(&mut members).await;
        let posted = exchange_post(&server, &mut members).await;
        assert_eq!(posted, 8, "members that heard the POSTed message");
    });
    // Rooms are named plainly; anything else is refused before the upgrade.
    let bad = server.get("/chat/no%20spaces").unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
    let health = server.health();
    assert_eq!(health["pubsub"]["backend"], "embedded", "{health}");
    assert_eq!(health["pubsub"]["state"], "ok", "{health}");
    assert_eq!(health["pubsub"]["dropped"], 0, "{health}");
}

/// POSTs one message to the room; how many members heard it.
async fn exchange_post(server: &Server, members: &mut [Member]) -> usize {
    let addr = server.addr;
    let response = tokio::task::spawn_blocking(move || {
        exchange(
            addr,
            b"POST /chat/news/messages HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello rooms",
            PATIENCE,
        )
    })
    .await
    .unwrap();
    assert_eq!(statuses(&response.0), vec![202]);
    let mut heard = 0;
    for member in members.iter_mut() {
        loop {
            if let Event::Said { from, text } = parse(&next_text(&mut member.ws).await) {
                assert_eq!((from.as_str(), text.as_str()), ("http", "hello rooms"));
                heard += 1;
                break;
            }
        }
    }
    heard
}

/// What one member heard during the reload test, per connection ("epoch").
#[derive(Default)]
struct Heard {
    /// (receiving epoch's generation, sender index, sender epoch, seq).
    said: Vec<(u64, usize, usize, u64)>,
    /// Joins heard, by the joiner's id, with the receiving generation.
    joins: Vec<(u64, String)>,
}

#[test]
fn a_room_spans_both_generations_across_a_reload() {
    let mut server = Server::ready(Options {
        workers: 4,
        ..Options::default()
    });
    let addr = server.addr;
    // Threads of its own: the members chat while this thread reloads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let tasks: Vec<_> = rt.block_on(async {
        let mut joined = spread(addr, "reload", 8, 4).await;
        settle(&mut joined).await;
        joined
            .into_iter()
            .enumerate()
            .map(|(index, member)| tokio::spawn(chatter(addr, index, member, stop.clone())))
            .collect()
    });
    // The overlap is held open: one worker of the new generation is
    // stopped before it can report ready, so the reload waits for it while
    // both generations serve. A prober joins a new worker meanwhile.
    let old: HashSet<u32> = server.worker_pids().into_iter().collect();
    let notes = server.notes().len();
    server.signal(libc::SIGHUP);
    let start = Instant::now();
    let held = loop {
        // Only once it runs the worker's code: stopped between fork and
        // exec, it would hold the supervisor's spawn instead.
        let exec_done = |pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"worker"))
        };
        let new = server
            .worker_pids()
            .into_iter()
            .find(|p| !old.contains(p) && exec_done(p));
        if let Some(pid) = new {
            send_signal(pid, libc::SIGSTOP);
            break pid;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no worker of the new generation"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let probe = rt.block_on(probe_new_generation(addr, 2));
    let old_still_serving = old.iter().all(|&pid| alive(pid));
    send_signal(held, libc::SIGCONT);
    server.wait_note_after(notes, "READY=1");
    let health = server.health();
    assert_eq!(health["generation"], 2, "{health}\n{}", server.log());
    // Everyone rejoined on the new generation; a second of chat after.
    std::thread::sleep(Duration::from_secs(1));
    stop.notify_waiters();
    let results: Vec<Vec<Heard>> = rt.block_on(async {
        let mut results = Vec::new();
        for task in tasks {
            match task.await {
                Ok(heard) => results.push(heard),
                Err(e) => panic!("{e}\n{}", server.log()),
            }
        }
        results
    });
    assert!(
        old_still_serving,
        "the old generation left before the probe"
    );
    check_reload(&results, probe.as_deref());
}

/// Connects until `/health` answers from generation `generation`, then
/// joins there; the joining member's id (`None` if no such worker answered
/// in time).
async fn probe_new_generation(addr: SocketAddr, generation: u64) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        let Some(member) = try_join(addr, "reload").await else {
            continue;
        };
        if member.generation == generation {
            return Some(member.id);
        }
    }
    None
}

/// One member through the reload: sends "<index> <epoch> <seq>" every 5 ms,
/// rejoins at once on 1012, and records what each connection heard.
async fn chatter(
    addr: SocketAddr,
    index: usize,
    mut member: Member,
    stop: std::sync::Arc<tokio::sync::Notify>,
) -> Vec<Heard> {
    let mut epochs = vec![Heard::default()];
    let mut epoch = 0usize;
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let stopped = stop.notified();
    tokio::pin!(stopped);
    let mut sending = true;
    loop {
        tokio::select! {
            () = &mut stopped, if sending => sending = false,
            // Stopped: what is still on its way is read until the room is
            // quiet.
            () = tokio::time::sleep(Duration::from_millis(500)), if !sending => break,
            _ = tick.tick(), if sending => {
                let text = format!("{index} {epoch} {seq}");
                if member.ws.send(Message::text(text)).await.is_ok() {
                    seq += 1;
                }
            }
            message = member.ws.next() => match message {
                Some(Ok(Message::Text(text))) => match parse(&text) {
                    Event::Said { text, .. } => {
                        let mut parts = text.split(' ').map(|p| p.parse::<u64>().unwrap());
                        let (i, e, s) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
                        epochs[epoch].said.push((member.generation, i as usize, e as usize, s));
                    }
                    Event::Join(id) => epochs[epoch].joins.push((member.generation, id)),
                    Event::Leave => {}
                },
                other @ (Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => {
                    let code = match other {
                        Some(Ok(Message::Close(ref frame))) => frame.as_ref().map(|f| f.code),
                        _ => None,
                    };
                    // Every connection is told 1012, a rejoin that reached
                    // an old worker in its drain's first instant included.
                    assert_eq!(code, Some(CloseCode::Restart), "member {index} connection {epoch} ended with {other:?}");
                    member = loop {
                        if let Some(m) = try_join(addr, "reload").await {
                            break m;
                        }
                    };
                    epochs.push(Heard::default());
                    epoch += 1;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    epochs
}

fn check_reload(results: &[Vec<Heard>], probe: Option<&str>) {
    // Every member was told to reconnect, and did.
    // (One that reached an old worker in its last instant is told again.)
    for (index, epochs) in results.iter().enumerate() {
        assert!(
            epochs.len() >= 2,
            "member {index} was never told to reconnect"
        );
    }
    // Between two connections that both stayed open, nothing was lost: for
    // each receiving connection and sending connection, what it heard is
    // one unbroken run of the sender's numbers.
    let mut last_sent: HashMap<(usize, usize), u64> = HashMap::new();
    for (receiver, epochs) in results.iter().enumerate() {
        for (epoch, heard) in epochs.iter().enumerate() {
            let mut runs: BTreeMap<(usize, usize), Vec<u64>> = BTreeMap::new();
            for &(_, sender, sender_epoch, seq) in &heard.said {
                runs.entry((sender, sender_epoch)).or_default().push(seq);
                let last = last_sent.entry((sender, sender_epoch)).or_default();
                *last = (*last).max(seq);
            }
            for (from, seqs) in runs {
                let unbroken = seqs.windows(2).all(|w| w[1] == w[0] + 1);
                assert!(
                    unbroken,
                    "member {receiver} connection {epoch} heard member {} connection {} with a gap or out of order: {seqs:?}",
                    from.0, from.1
                );
            }
        }
    }
    // After everyone rejoined, everything reached everyone: each member's
    // last connection heard every other member's last connection up to its
    // last message.
    for (receiver, epochs) in results.iter().enumerate() {
        let last = epochs.last().unwrap();
        for (sender, sender_epochs) in results.iter().enumerate() {
            let sender_epoch = sender_epochs.len() - 1;
            let Some(&sent) = last_sent.get(&(sender, sender_epoch)) else {
                panic!("member {sender}'s last connection was heard by nobody")
            };
            let heard = last
                .said
                .iter()
                .filter(|m| (m.1, m.2) == (sender, sender_epoch))
                .map(|m| m.3)
                .max();
            assert_eq!(
                heard,
                Some(sent),
                "member {receiver} did not hear member {sender}'s messages after both rejoined"
            );
            let count = last
                .said
                .iter()
                .filter(|m| (m.1, m.2) == (sender, sender_epoch))
                .count();
            assert!(
                count >= 50,
                "member {receiver} heard only {count} messages of member {sender} after the reload"
            );
        }
    }
    // While the reload overlapped the generations, a member still on the
    // old one heard a member already on the new one.
    let probe = probe.expect("a worker of the new generation answered while the old one served");
    let heard_across = results.iter().flatten().any(|heard| {
        heard
            .joins
            .iter()
            .any(|(generation, id)| *generation == 1 && id == probe)
    });
    assert!(
        heard_across,
        "no member on generation 1 heard the join of {probe}, on generation 2"
    );
}

/// Whether the server's end of the loopback connection from
/// `client_port` to `server_port` is ESTABLISHED, read from /proc/net/tcp.
fn established(server_port: u16, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{server_port:04X}");
    let remote = format!("0100007F:{client_port:04X}");
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 3 && f[1] == local && f[2] == remote && f[3] == "01"
    })
}

/// Samples `count` every 20 ms for `span`; the longest time it stayed the
/// same.
fn longest_still(span: Duration, mut count: impl FnMut() -> usize) -> Duration {
    let start = Instant::now();
    let (mut last, mut since, mut longest) = (count(), Instant::now(), Duration::ZERO);
    while start.elapsed() < span {
        std::thread::sleep(Duration::from_millis(20));
        let now = count();
        if now != last {
            longest = longest.max(since.elapsed());
            (last, since) = (now, Instant::now());
        }
    }
    longest.max(since.elapsed())
}

#[test]
fn a_flood_never_delays_supervision_and_memory_stays_bounded() {
    // Watchdog at 2 s: ferricorn pets every second; systemd would kill it
    // at 2 s without one. Heartbeats every 750 ms against a 3 s timeout:
    // tight enough that a hub sharing the supervisor's loop would show,
    // loose enough for a CI machine running the suite's tests in parallel.
    // A client gets 2 s to take a send: the readers here must keep up with
    // the flood on a busy machine, the silent member never does.
    let mut server = Server::ready(Options {
        workers: 2,
        wrapper_env: "WATCHDOG_USEC=2000000 WATCHDOG_PID=$$".into(),
        config: "timeout = 3\nws_ping_interval = 1\nws_ping_timeout = 2".into(),
        ..Options::default()
    });
    let addr = server.addr;
    let supervisor = server.pid();
    // Threads of its own: the flood runs while this thread watches.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flood = Duration::from_secs(6);
    // The flood: 4 members on both workers sending as fast as they can,
    // 2 members reading everything, and 1 that never reads.
    let (_silent, silent_port, flooders, readers_end) = rt.block_on(async {
        let mut members = spread(addr, "flood", 4, 2).await;
        let silent = join(addr, "flood").await;
        // A small window, so the server's side fills in a fraction of the
        // flood, as a phone that stopped reading would.
        let size: libc::c_int = 4096;
        // SAFETY: an int option on a live socket of ours.
        let rc = unsafe {
            libc::setsockopt(
                silent.ws.get_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        settle(&mut members).await;
        let silent_port = silent.ws.get_ref().local_addr().unwrap().port();
        let readers: Vec<Member> = members.drain(2..).collect();
        let mut flooders = Vec::new();
        for member in members {
            // Through the reload too: told 1012, a flooder joins again and
            // goes on.
            flooders.push(tokio::spawn(async move {
                let start = Instant::now();
                let mut sent = 0u64;
                let text = "x".repeat(1000);
                let mut member = member;
                loop {
                    let (mut tx, mut rx) = member.ws.split();
                    let read =
                        tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
                    // 10 messages every 4 ms: 2,500/s per flooder, 5,000/s
                    // into the room, 5 MB/s to each member; paced, so the
                    // readers keep up even on a busy machine and a reset
                    // can only be the server's doing.
                    let mut pace = tokio::time::interval(Duration::from_millis(4));
                    'sending: while start.elapsed() < flood {
                        pace.tick().await;
                        for _ in 0..10 {
                            if tx.send(Message::text(text.clone())).await.is_err() {
                                break 'sending;
                            }
                            sent += 1;
                        }
                    }
                    read.abort();
                    if start.elapsed() >= flood {
                        return sent;
                    }
                    member = loop {
                        if let Some(m) = try_join(addr, "flood").await {
                            break m;
                        }
                    };
                }
            }));
        }
        // The readers were connected before the reload, and are sent to
        // without pause when it comes.
        let mut readers_end = Vec::new();
        for reader in readers {
            readers_end.push(tokio::spawn(async move {
                let (_tx, mut rx) = reader.ws.split();
                loop {
                    match tokio::time::timeout(PATIENCE, rx.next()).await {
                        Ok(Some(Ok(Message::Close(frame)))) => return Ok(frame.map(|f| f.code)),
                        Ok(Some(Ok(_))) => {}
                        other => return Err(format!("{other:?}")),
                    }
                }
            }));
        }
        (silent, silent_port, flooders, readers_end)
    });
    let pets = |s: &mut Server| {
        s.notes()
            .iter()
            .filter(|n| n.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    };
    // The flood runs on the runtime's threads; a reload in its middle
    // must complete.
    let half = flood / 3;
    let still = longest_still(half, || pets(&mut server));
    // The member that never reads was dropped before the reload: it cannot
    // answer a ping (closed with 1011 after ws_ping_interval plus
    // ws_ping_timeout), nor take a send that fills its window (dropped
    // after ws_ping_timeout). The server's end of its connection leaves
    // ESTABLISHED (its client cannot tell: the FIN waits behind the data
    // its full window refuses).
    if poll(PATIENCE, || {
        (!established(addr.port(), silent_port)).then_some(())
    })
    .is_none()
    {
        panic!("the silent member is still served");
    }
    let notes = server.notes().len();
    let reloading = Instant::now();
    server.signal(libc::SIGHUP);
    server.wait_note_after(notes, "READY=1");
    let reload_took = reloading.elapsed();
    let still_after = longest_still(half, || pets(&mut server));
    let rss_supervisor = rss_kib(supervisor);
    let rss_workers: Vec<u64> = server.worker_pids().into_iter().map(rss_kib).collect();
    let statuses = server
        .notes()
        .iter()
        .filter(|n| n.lines().any(|l| l.starts_with("STATUS=")))
        .count();
    let (total, ends) = rt.block_on(async {
        let mut total = 0;
        for f in flooders {
            total += f.await.unwrap();
        }
        let mut ends = Vec::new();
        for r in readers_end {
            ends.push(r.await.unwrap());
        }
        (total, ends)
    });
    // Told 1012 as the reload drained them, unless so far behind the flood
    // that the close handshake's 2 s ran out first (the suite's parallel
    // load does that): then dropped. Either way their connections ended.
    let told = ends
        .iter()
        .filter(|e| **e == Ok(Some(CloseCode::Restart)))
        .count();
    eprintln!(
        "flood: {total} messages sent in {flood:?}; longest without WATCHDOG=1: {still:?} / {still_after:?}; \
         reload took {reload_took:?}; RSS supervisor {rss_supervisor} KiB, workers {rss_workers:?} KiB; {statuses} STATUS= lines; \
         {told} of 2 readers told 1012"
    );
    assert!(
        total as f64 / flood.as_secs_f64() > 2000.0,
        "not a flood: {total} messages"
    );
    assert!(
        still < Duration::from_secs(2) && still_after < Duration::from_secs(2),
        "watchdog late: {still:?}, {still_after:?}"
    );
    assert!(
        reload_took < Duration::from_secs(10),
        "reload took {reload_took:?}"
    );
    assert!(!server.log().contains("no heartbeat"), "{}", server.log());
    assert_eq!(server.health()["supervisor"]["restarts"], 0);
    // Bounded: the hub's and each worker's queues have byte budgets, and a
    // room keeps 256 messages; far below these.
    assert!(
        rss_supervisor < 64 * 1024,
        "supervisor RSS {rss_supervisor} KiB"
    );
    for rss in rss_workers {
        assert!(rss < 128 * 1024, "worker RSS {rss} KiB");
    }
}

/// A `redis-server` on a free loopback port, stopped when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Not started yet: the port nothing listens on.
    fn stopped(port: u16) -> Redis {
        Redis {
            child: None,
            port,
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; scripts/test installs it)");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        eventually("redis-server listening", PATIENCE, || {
            std::net::TcpStream::connect(addr).ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every worker's `/health` pub/sub figures.
fn pubsub_of(server: &Server, workers: usize) -> Vec<serde_json::Value> {
    server
        .health_of_workers(workers)
        .into_values()
        .map(|health| health["pubsub"].clone())
        .collect()
}

#[test]
fn two_hosts_share_a_room_through_redis_and_survive_its_restart() {
    let mut redis = Redis::stopped(free_port());
    let options = || Options {
        workers: 2,
        config: format!("pubsub_url = \"{}\"", redis.url()),
        ..Options::default()
    };
    // Redis down at start is not fatal: both serve, /health says so.
    let hosts = [Server::ready(options()), Server::ready(options())];
    for host in &hosts {
        for pubsub in pubsub_of(host, 2) {
            assert_eq!(pubsub["backend"], "redis", "{pubsub}");
            assert_eq!(pubsub["state"], "degraded", "{pubsub}");
        }
    }
    redis.start();
    let all_ok = |hosts: &[Server]| {
        eventually("pub/sub connected on every worker", PATIENCE, || {
            hosts
                .iter()
                .all(|h| pubsub_of(h, 2).iter().all(|p| p["state"] == "ok"))
                .then_some(())
        })
    };
    all_ok(&hosts);
    let rt = runtime();
    let round = |rt: &tokio::runtime::Runtime, room: &str| {
        rt.block_on(async {
            let mut members = Vec::new();
            for host in &hosts {
                members.extend(spread(host.addr, room, 4, 2).await);
            }
            settle(&mut members).await;
            let heard = converse(members, 25, 8 * 25).await;
            assert_exactly_once_in_order(&heard, 8, 25);
        })
    };
    round(&rt, "shared");
    // Redis goes away: the hosts stay up, each worker still hears its own
    // members, and what was published meanwhile is counted and logged.
    redis.stop();
    for host in &hosts {
        eventually("degraded", PATIENCE, || {
            pubsub_of(host, 2)
                .iter()
                .all(|p| p["state"] == "degraded")
                .then_some(())
        });
    }
    rt.block_on(async {
        let mut alone = join(hosts[0].addr, "outage").await;
        alone.ws.send(Message::text("anyone?")).await.unwrap();
        loop {
            if let Event::Said { text, .. } = parse(&next_text(&mut alone.ws).await) {
                assert_eq!(text, "anyone?");
                break;
            }
        }
    });
    let lost: u64 = pubsub_of(&hosts[0], 2)
        .iter()
        .map(|p| p["lost"].as_u64().unwrap())
        .sum();
    // The join, the message (and the leave) of the member above.
    assert!(lost >= 2, "lost {lost}");
    redis.start();
    all_ok(&hosts);
    round(&rt, "after");
    hosts[0].wait_log("Redis reachable again");
    assert!(hosts[0].log().contains("lost Redis"), "{}", hosts[0].log());
}
