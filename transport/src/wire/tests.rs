//! Unit tests of the envelope and frame codec.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Message {
    Vote {
        term: u64,
        candidate: String,
    },
    Append {
        entries: Vec<Vec<u8>>,
        commit: Option<u64>,
    },
    Empty,
}

fn sample() -> Message {
    Message::Append {
        entries: vec![b"set x 1".to_vec(), vec![]],
        commit: Some(7),
    }
}

#[test]
fn envelope_round_trips() {
    let envelope = encode_envelope(&sample()).expect("encode");
    assert_eq!(envelope[0], WIRE_VERSION);
    assert_eq!(
        decode_envelope::<Message>(&envelope).expect("decode"),
        sample()
    );
}

#[test]
fn frame_round_trips_and_carries_a_big_endian_length() {
    let frame = encode_frame(&sample(), MAX_FRAME_BYTES).expect("encode");
    let announced = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    assert_eq!(announced as usize, frame.len() - FRAME_HEADER_BYTES);
    assert_eq!(
        decode_frame::<Message>(&frame, MAX_FRAME_BYTES).expect("decode"),
        sample()
    );
}

#[test]
fn unknown_version_is_refused() {
    let mut envelope = encode_envelope(&sample()).expect("encode");
    envelope[0] = 2;
    assert!(matches!(
        decode_envelope::<Message>(&envelope),
        Err(WireError::UnknownVersion { got: 2 })
    ));
}

#[test]
fn truncated_input_is_refused() {
    assert!(matches!(
        decode_envelope::<Message>(&[]),
        Err(WireError::Truncated)
    ));
    let envelope = encode_envelope(&sample()).expect("encode");
    let cut = &envelope[..envelope.len() - 1];
    assert!(matches!(
        decode_envelope::<Message>(cut),
        Err(WireError::Truncated)
    ));
    let frame = encode_frame(&sample(), MAX_FRAME_BYTES).expect("encode");
    assert!(matches!(
        decode_frame::<Message>(&frame[..frame.len() - 1], MAX_FRAME_BYTES),
        Err(WireError::Truncated)
    ));
    assert!(matches!(
        decode_frame::<Message>(&frame[..3], MAX_FRAME_BYTES),
        Err(WireError::Truncated)
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut envelope = encode_envelope(&Message::Empty).expect("encode");
    envelope.push(0);
    assert!(matches!(
        decode_envelope::<Message>(&envelope),
        Err(WireError::TrailingBytes { count: 1 })
    ));
}

#[test]
fn garbage_payload_is_malformed() {
    // Variant index 9 does not exist in `Message`.
    assert!(matches!(
        decode_envelope::<Message>(&[WIRE_VERSION, 9]),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn oversized_frames_are_refused_on_both_sides() {
    let big = Message::Append {
        entries: vec![vec![7; 2048]],
        commit: None,
    };
    assert!(matches!(
        encode_frame(&big, 1024),
        Err(WireError::Oversized { limit: 1024, .. })
    ));
    let frame = encode_frame(&big, MAX_FRAME_BYTES).expect("encode");
    assert!(matches!(
        decode_frame::<Message>(&frame, 1024),
        Err(WireError::Oversized { limit: 1024, .. })
    ));
    let header = (MAX_FRAME_BYTES + 1).to_be_bytes();
    assert!(matches!(
        frame_length(header, u32::MAX),
        Err(WireError::Oversized {
            limit: MAX_FRAME_BYTES,
            ..
        })
    ));
}

#[tokio::test]
async fn frames_round_trip_over_an_async_stream() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    let writer = tokio::spawn(async move {
        write_frame(&mut client, &sample(), MAX_FRAME_BYTES)
            .await
            .expect("write");
    });
    let received: Message = read_frame(&mut server, MAX_FRAME_BYTES)
        .await
        .expect("read");
    writer.await.expect("join");
    assert_eq!(received, sample());
}

#[tokio::test]
async fn a_stream_that_ends_mid_frame_is_truncated() {
    let frame = encode_frame(&sample(), MAX_FRAME_BYTES).expect("encode");
    let mut reader = &frame[..frame.len() - 2];
    assert!(matches!(
        read_frame::<_, Message>(&mut reader, MAX_FRAME_BYTES).await,
        Err(FrameError::Wire(WireError::Truncated))
    ));
    let mut reader: &[u8] = &[0, 0];
    assert!(matches!(
        read_frame::<_, Message>(&mut reader, MAX_FRAME_BYTES).await,
        Err(FrameError::Wire(WireError::Truncated))
    ));
}

fn message_strategy() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), ".{0,40}").prop_map(|(term, candidate)| Message::Vote { term, candidate }),
        (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            any::<Option<u64>>()
        )
            .prop_map(|(entries, commit)| Message::Append { entries, commit }),
        Just(Message::Empty),
    ]
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_envelope::<Message>(&bytes);
        let _ = decode_frame::<Message>(&bytes, MAX_FRAME_BYTES);
        let _ = decode_frame::<Vec<String>>(&bytes, 64);
    }

    #[test]
    fn version_prefixed_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut envelope = vec![WIRE_VERSION];
        envelope.extend_from_slice(&bytes);
        let _ = decode_envelope::<Message>(&envelope);
        let _ = decode_envelope::<(String, Vec<u64>, Option<bool>)>(&envelope);
    }

    #[test]
    fn encode_then_decode_is_identity(message in message_strategy()) {
        let envelope = encode_envelope(&message).expect("encode envelope");
        prop_assert_eq!(decode_envelope::<Message>(&envelope).expect("decode envelope"), message.clone());
        let frame = encode_frame(&message, MAX_FRAME_BYTES).expect("encode frame");
        prop_assert_eq!(&frame[FRAME_HEADER_BYTES..], &envelope[..]);
        prop_assert_eq!(decode_frame::<Message>(&frame, MAX_FRAME_BYTES).expect("decode frame"), message);
    }
}
