//! The frames between a worker and the supervisor's hub, inside the
//! length prefix `tokio_util`'s codec adds: one kind byte, the topic's
//! length (one byte) and the topic, then the message. The hub forwards a
//! publish frame as it came, so a message is encoded once however many
//! workers it reaches.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::LengthDelimitedCodec;

use super::{MAX_MESSAGE, MAX_TOPIC};

const SUBSCRIBE: u8 = b'S';
const UNSUBSCRIBE: u8 = b'U';
const PUBLISH: u8 = b'P';

/// One frame, borrowed from its bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Subscribe(&'a [u8]),
    Unsubscribe(&'a [u8]),
    Publish { topic: &'a [u8], message: &'a [u8] },
}

/// The length-prefixed codec, refusing frames no worker may send.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(2 + MAX_TOPIC + MAX_MESSAGE)
        .new_codec()
}

fn encode(kind: u8, topic: &str, message: &[u8]) -> Bytes {
    debug_assert!(topic.len() <= MAX_TOPIC);
    let mut out = BytesMut::with_capacity(2 + topic.len() + message.len());
    out.put_u8(kind);
    out.put_u8(topic.len() as u8);
    out.put_slice(topic.as_bytes());
    out.put_slice(message);
    out.freeze()
}

pub fn publish(topic: &str, message: &[u8]) -> Bytes {
    encode(PUBLISH, topic, message)
}

pub fn subscribe(topic: &str) -> Bytes {
    encode(SUBSCRIBE, topic, &[])
}

pub fn unsubscribe(topic: &str) -> Bytes {
    encode(UNSUBSCRIBE, topic, &[])
}

/// Reads a frame; `None` for one no worker sends (unknown kind, a topic
/// longer than the frame).
pub fn decode(frame: &[u8]) -> Option<Frame<'_>> {
    let (&kind, rest) = frame.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let (topic, message) = rest.split_at_checked(usize::from(len))?;
    match kind {
        SUBSCRIBE if message.is_empty() => Some(Frame::Subscribe(topic)),
        UNSUBSCRIBE if message.is_empty() => Some(Frame::Unsubscribe(topic)),
        PUBLISH => Some(Frame::Publish { topic, message }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back() {
        assert_eq!(
            decode(&publish("chat/a", b"hi")),
            Some(Frame::Publish {
                topic: b"chat/a",
                message: b"hi"
            })
        );
        assert_eq!(decode(&subscribe("t")), Some(Frame::Subscribe(b"t")));
        assert_eq!(decode(&unsubscribe("t")), Some(Frame::Unsubscribe(b"t")));
        assert_eq!(
            decode(&publish("t", b"")),
            Some(Frame::Publish {
                topic: b"t",
                message: b""
            })
        );
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"P"), None);
        assert_eq!(decode(b"P\x05abc"), None);
        assert_eq!(decode(b"X\x01a"), None);
        assert_eq!(decode(b"S\x01ab"), None);
    }
}
