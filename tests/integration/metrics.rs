//! `/metrics`: one view of the whole service on its own socket, read as
//! Prometheus reads it. Counters equal what was sent and never go back
//! across reloads, a `kill -9` and a `max_requests` recycle; the public
//! socket never answers `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// A metric's full name: the package's, so a renamed copy's tests read
/// its own.
fn m(name: &str) -> String {
    format!("{}_{name}", env!("CARGO_PKG_NAME").replace('-', "_"))
}

/// One scrape: every sample by its series (`name{labels}`), and each
/// family's type.
#[derive(Clone, Debug, Default)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses the text format strictly: a line that is neither a comment
    /// nor `series value` fails the test rather than reading as 0.
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                scrape.types.insert(name.into(), kind.into());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            assert!(
                scrape.samples.insert(series.into(), value).is_none(),
                "{series} twice"
            );
        }
        scrape
    }

    /// The sum of a family's samples whose labels contain every one of
    /// `labels` (`key="value"` pieces).
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let family = series.split('{').next().unwrap_or(series);
                family == name && labels.iter().all(|l| series.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Series of counters and histograms: the ones that may never go back.
    fn monotonic(&self) -> impl Iterator<Item = (&String, &f64)> {
        self.samples.iter().filter(|(series, _)| {
            let family = series.split('{').next().unwrap_or(series);
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| family.strip_suffix(suffix))
                .filter(|base| self.types.get(*base).is_some_and(|t| t == "histogram"))
                .unwrap_or(family);
            matches!(
                self.types.get(base).map(String::as_str),
                Some("counter" | "histogram")
            )
        })
    }
}

fn scrape(addr: SocketAddr) -> Scrape {
    let r = get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    Scrape::parse(&r.body)
}

/// Waits until the service's counters show `sent` requests to `/health`.
fn wait_counted(metrics: SocketAddr, sent: u64) -> Scrape {
    let mut last = Scrape::default();
    poll(PATIENCE, || {
        last = scrape(metrics);
        let counted = last.sum(&m("http_requests_total"), &[r#"route="/health""#]);
        (counted == sent as f64).then_some(())
    })
    .unwrap_or_else(|| panic!("{sent} requests never counted; last scrape: {last:#?}"));
    last
}

/// Scrapes every 20 ms in the background until dropped; checks that no
/// counter went back, or vanished, between any two scrapes.
struct Watcher {
    stop: Arc<AtomicBool>,
    scrapes: Arc<Mutex<Vec<Scrape>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(metrics: SocketAddr) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes: Arc<Mutex<Vec<Scrape>>> = Arc::default();
        let (done, into) = (stop.clone(), scrapes.clone());
        let thread = std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let s = scrape(metrics);
                into.lock().unwrap().push(s);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Watcher {
            stop,
            scrapes,
            thread: Some(thread),
        }
    }

    /// Stops, and checks every pair of consecutive scrapes; returns how
    /// many there were.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("scraper");
        self.check()
    }

    /// Checks every pair of consecutive scrapes so far; returns how many
    /// there were.
    fn check(&self) -> usize {
        let scrapes = self.scrapes.lock().unwrap();
        for pair in scrapes.windows(2) {
            for (series, before) in pair[0].monotonic() {
                let after = pair[1].samples.get(series);
                assert!(
                    after.is_some_and(|after| after >= before),
                    "{series} went from {before} to {after:?}"
                );
            }
        }
        scrapes.len()
    }
}

impl Watcher {
    /// Waits until the watcher's latest scrape satisfies `f`.
    fn until(&self, what: &str, f: impl Fn(&Scrape) -> bool) {
        eventually(what, PATIENCE, || {
            let scrapes = self.scrapes.lock().unwrap();
            scrapes.last().is_some_and(&f).then_some(())
        });
    }
}

fn exits(s: &Scrape, cause: &str) -> f64 {
    s.sum(&m("worker_exits_total"), &[&format!("cause=\"{cause}\"")])
}

/// `n` requests to `/health`, each answered 200; the running total.
fn send(server: &Server, sent: &mut u64, n: u64) -> u64 {
    for _ in 0..n {
        let r = server.get("/health").expect("GET /health");
        assert_eq!(r.status, 200);
    }
    *sent += n;
    *sent
}

#[test]
fn counters_add_up_and_never_go_back_across_reloads_a_kill_and_a_recycle() {
    let mut server = Server::ready(Options {
        workers: 2,
        metrics_socket: true,
        config: "max_requests = 40\n".into(),
        ..Options::default()
    });
    let metrics = server.metrics_addr.expect("metrics socket passed");
    let watcher = Watcher::start(metrics);
    let mut sent = 0u64;
    wait_counted(metrics, send(&server, &mut sent, 30));

    for generation in 2..=4 {
        let seen = server.notes().len();
        server.signal(libc::SIGHUP);
        server.wait_note_after(seen, "READY=1");
        let drained = f64::from(2 * (generation - 1));
        watcher.until("the old generation's exits", |s| {
            exits(s, "reload") == drained
        });
        watcher.check();
        wait_counted(metrics, send(&server, &mut sent, 10));
        let s = scrape(metrics);
        assert_eq!(s.sum(&m("generation"), &[]), f64::from(generation));
    }
    let reloads = scrape(metrics).sum(&m("reloads_total"), &[r#"outcome="ok""#]);
    assert_eq!(reloads, 3.0);

    // Its counts are in (wait_counted above); killing it loses none.
    let victim = server.worker_pids()[0];
    send_signal(victim, libc::SIGKILL);
    watcher.until("the kill counted", |s| exits(s, "signal") == 1.0);
    watcher.check();
    wait_counted(metrics, send(&server, &mut sent, 20));

    // 40 requests a worker: both recycle.
    let total = send(&server, &mut sent, 100);
    watcher.until("a max_requests recycle counted", |s| {
        exits(s, "max_requests") >= 1.0
    });
    watcher.check();
    let last = wait_counted(metrics, total);

    let scrapes = watcher.finish();
    assert!(scrapes > 20, "only {scrapes} scrapes watched");

    // The histogram counts what the counter counts.
    let counted = last.sum(&m("http_requests_total"), &[r#"route="/health""#]);
    let timed = last.sum(
        &m("http_request_duration_seconds_count"),
        &[r#"route="/health""#],
    );
    assert_eq!((counted, timed), (total as f64, total as f64));
    // Every worker that held a slot, summed per slot, adds up too.
    assert_eq!(last.sum(&m("worker_requests_total"), &[]), total as f64);

    // The public socket has no /metrics; the metrics socket nothing else.
    assert_eq!(server.get("/metrics").expect("public GET").status, 404);
    assert_eq!(get(metrics, "/health").expect("GET").status, 404);
    let (raw, _) = exchange(
        metrics,
        b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        PATIENCE,
    );
    assert_eq!(statuses(&raw), [405]);
}

#[test]
fn metrics_bind_serves_websocket_counts_and_the_live_state() {
    let server = Server::ready(Options {
        workers: 1,
        socket: Socket::SelfBound,
        config: "metrics_bind = \"127.0.0.1:0\"\n".into(),
        ..Options::default()
    });
    let metrics: SocketAddr = eventually("the metrics address", PATIENCE, || {
        let log = server.log();
        let rest = log.split("/metrics on ").nth(1)?;
        rest[..rest.find(['"', ' ', ','])?].parse().ok()
    });
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(server.addr).await;
        for text in ["one", "two", "three"] {
            ws.send(Message::Text(text.into())).await.expect("send");
            assert_eq!(next_text(&mut ws).await, text);
        }
        // Gauges are as of the worker's last heartbeat.
        eventually("one WebSocket open", PATIENCE, || {
            (scrape(metrics).sum(&m("websockets"), &[]) == 1.0).then_some(())
        });
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .expect("close");
        while ws.next().await.is_some() {}
    });
    let s = eventually("the WebSocket's counts", PATIENCE, || {
        let s = scrape(metrics);
        let closed = s.sum(&m("websocket_closes_total"), &[r#"code="1000""#]) == 1.0;
        (closed && s.sum(&m("websockets"), &[]) == 0.0).then_some(s)
    });
    let messages = m("websocket_messages_total");
    assert_eq!(s.sum(&messages, &[r#"direction="received""#]), 3.0);
    assert_eq!(s.sum(&messages, &[r#"direction="sent""#]), 3.0);
    assert_eq!(s.sum(&m("websockets"), &[]), 0.0);
    assert_eq!(
        s.sum(
            &m("http_requests_total"),
            &[r#"route="/ws""#, r#"status="1xx""#]
        ),
        1.0
    );
    assert_eq!(s.sum(&m("workers"), &[r#"state="ready""#]), 1.0);
    assert_eq!(s.sum(&m("workers_target"), &[]), 1.0);
    assert!(s.sum(&m("worker_memory_bytes"), &[r#"worker="1""#]) > 1e6);
    assert_eq!(
        s.sum(&m("listen_queue_limit"), &[]),
        2048.0,
        "the default backlog"
    );
    assert_eq!(s.sum(&m("build_info"), &[]), 1.0);
}
