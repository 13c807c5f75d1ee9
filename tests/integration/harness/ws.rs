//! WebSocket helpers: a client by library (tokio-tungstenite) and one by
//! hand, for frames no library would send.

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::PATIENCE;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

pub async fn connect(addr: std::net::SocketAddr) -> Ws {
    connect_to(addr, "/ws").await
}

pub async fn connect_to(addr: std::net::SocketAddr, path: &str) -> Ws {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Reads until a Close frame; returns its code.
pub async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    close_frame(ws).await.map(|(code, _)| code)
}

/// Reads until a Close frame; returns its code and reason (None if the
/// connection ended without one).
pub async fn close_frame(ws: &mut Ws) -> Option<(CloseCode, String)> {
    let read = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| (f.code, f.reason.to_string())),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("close frame in time")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The next text message, skipping the server's pings.
pub async fn next_text(ws: &mut Ws) -> String {
    let read = async {
        loop {
            match ws.next().await.expect("open").expect("read") {
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("message in time")
}

/// A WebSocket handshake by hand, so the test can send frames no client
/// library would.
pub async fn raw_websocket(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads frames until a Close frame; its status code.
pub async fn raw_close_code(stream: &mut tokio::net::TcpStream) -> u16 {
    let read = async {
        loop {
            let mut h = [0u8; 2];
            stream.read_exact(&mut h).await.unwrap();
            let len = match h[1] & 0x7f {
                126 => stream.read_u16().await.unwrap() as usize,
                127 => stream.read_u64().await.unwrap() as usize,
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.unwrap();
            if h[0] & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("close frame")
}

/// A masked client frame.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}
