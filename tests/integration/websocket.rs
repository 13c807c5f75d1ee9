//! `/ws`: echo, size limit, and the close code a drain sends.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

#[test]
fn echoes_text_and_binary_and_answers_ping() {
    let server = Server::ready(Options::default());
    runtime().block_on(async {
        let mut ws = connect(server.addr).await;
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 1, 2, 255])
        );
        ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Pong(b"p".to_vec().into())
        );
    });
}

#[test]
fn oversize_message_closes_with_1009() {
    let server = Server::ready(Options {
        config: "ws_max_size = 1024".into(),
        ..Options::default()
    });
    runtime().block_on(async {
        let mut ws = connect(server.addr).await;
        ws.send(Message::text("x".repeat(1000))).await.unwrap();
        assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
        ws.send(Message::binary(vec![7u8; 4096])).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    });
    // The worker survived it.
    assert_eq!(server.health()["status"], "healthy");
}

#[test]
fn sigterm_closes_open_websocket_with_1001_and_exits_clean() {
    let mut server = Server::ready(Options::default());
    let workers = server.worker_pids();
    let rt = runtime();
    let mut ws = rt.block_on(connect(server.addr));
    rt.block_on(async {
        ws.send(Message::text("before")).await.unwrap();
        ws.next().await.unwrap().unwrap();
    });
    server.signal(libc::SIGTERM);
    let close = rt.block_on(close_frame(&mut ws));
    assert_eq!(
        close,
        Some((CloseCode::Away, "server shutting down".to_owned()))
    );
    drop(ws);
    let status = server.wait_exit(PATIENCE);
    assert!(status.success(), "exit {status}\n{}", server.log());
    assert!(server
        .notes()
        .iter()
        .any(|n| n.lines().any(|l| l == "STOPPING=1")));
    for pid in workers {
        assert!(!alive(pid), "worker {pid} still running");
    }
}

#[test]
fn chat_reaches_every_member_and_reload_says_reconnect() {
    let server = Server::ready(Options {
        workers: 1,
        ..Options::default()
    });
    let rt = runtime();
    // What a member hears next of the room: the text of the next message.
    async fn said(ws: &mut Ws) -> String {
        loop {
            let event: serde_json::Value = serde_json::from_str(&next_text(ws).await).unwrap();
            if event["type"] == "message" {
                return event["text"].as_str().unwrap().to_owned();
            }
        }
    }
    let (mut alice, mut bob) = rt.block_on(async {
        (
            connect_to(server.addr, "/chat").await,
            connect_to(server.addr, "/chat").await,
        )
    });
    rt.block_on(async {
        // Both are members once their handshakes are answered.
        alice.send(Message::text("hello")).await.unwrap();
        assert_eq!(said(&mut alice).await, "hello");
        assert_eq!(said(&mut bob).await, "hello");
        bob.send(Message::text("hi alice")).await.unwrap();
        assert_eq!(said(&mut alice).await, "hi alice");
        assert_eq!(said(&mut bob).await, "hi alice");
        // So is every newcomer, however soon it is spoken to: no message
        // sent after its 101 is missed.
        for round in 0..50 {
            let mut newcomer = connect_to(server.addr, "/chat").await;
            let line = format!("welcome {round}");
            alice.send(Message::text(line.clone())).await.unwrap();
            assert_eq!(said(&mut newcomer).await, line);
            assert_eq!(said(&mut alice).await, line);
            assert_eq!(said(&mut bob).await, line);
        }
    });
    // A reload drains the room's worker: every member is told to reconnect.
    server.signal(libc::SIGHUP);
    rt.block_on(async {
        assert_eq!(close_code(&mut alice).await, Some(CloseCode::Restart));
        assert_eq!(close_code(&mut bob).await, Some(CloseCode::Restart));
    });
    eventually("the new generation serving", PATIENCE, || {
        (server.health()["generation"] == 2).then_some(())
    });
    // Reconnected, they are in the room again, on the new generation.
    rt.block_on(async {
        let mut carol = connect_to(server.addr, "/chat").await;
        carol.send(Message::text("new room")).await.unwrap();
        assert_eq!(said(&mut carol).await, "new room");
    });
}
