//! Bench-only WebSocket load generator for `scripts/bench`.
//!
//!   wsload echo ADDR CONNECTIONS MESSAGES SIZE   each connection sends MESSAGES
//!                                                 text messages of SIZE bytes, one
//!                                                 at a time, waiting for each echo;
//!                                                 prints JSON: msgs/s, p50/p99 RTT
//!   wsload idle ADDR CONNECTIONS                  opens CONNECTIONS and holds them
//!                                                 until stdin closes; prints "open N"
//!
//! Bounded: every run ends by itself (echo after its messages, a 120 s cap;
//! idle when stdin closes or after 120 s).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

const CAP: Duration = Duration::from_secs(120);

async fn connect(
    addr: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn echo(addr: String, connections: usize, messages: usize, size: usize) {
    let payload = "x".repeat(size);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let addr = addr.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut rtts = Vec::with_capacity(messages);
            let mut ws = match connect(&addr).await {
                Ok(ws) => ws,
                Err(_) => return (rtts, 1usize),
            };
            for _ in 0..messages {
                let sent = Instant::now();
                if ws.send(Message::text(payload.clone())).await.is_err() {
                    return (rtts, 1);
                }
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => rtts.push(sent.elapsed()),
                    _ => return (rtts, 1),
                }
            }
            let _ = ws.close(None).await;
            (rtts, 0)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((rtts, e)) = t.await {
            all.extend(rtts);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"messages\":{},\"seconds\":{elapsed:.3},\"msgs_per_s\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"errors\":{errors}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

async fn idle(addr: String, connections: usize) {
    let mut open = Vec::with_capacity(connections);
    for _ in 0..connections {
        match connect(&addr).await {
            Ok(ws) => open.push(ws),
            Err(e) => {
                eprintln!("wsload: connection {} failed: {e}", open.len());
                break;
            }
        }
    }
    println!("open {}", open.len());
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1];
    let _ = tokio::time::timeout(CAP, stdin.read(&mut buf)).await;
    drop(open);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize| {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .expect("numeric argument")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let work = async {
        match args.get(1).map(String::as_str) {
            Some("echo") => echo(args[2].clone(), num(3), num(4), num(5)).await,
            Some("idle") => idle(args[2].clone(), num(3)).await,
            _ => eprintln!("usage: wsload echo ADDR CONNS MSGS SIZE | wsload idle ADDR CONNS"),
        }
    };
    if runtime
        .block_on(async { tokio::time::timeout(CAP, work).await })
        .is_err()
    {
        eprintln!("wsload: stopped at the {CAP:?} cap");
    }
}
