//! Frame and envelope decoding: no input panics or allocates beyond the frame limit,
//! and every accepted message survives a re-encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transport::rpc::ResponseEnvelope;
use transport::wire::{
    MAX_FRAME_BYTES, decode_envelope, decode_frame, encode_envelope, encode_frame,
};

/// A message shape with the serde features real messages use: strings, byte
/// vectors, options, nested sequences and integers of several widths.
type Request = (u8, String, Vec<u8>, Option<u64>, Vec<(u32, bool, i64)>);
/// The response envelope as the client decodes it.
type Response = ResponseEnvelope<Vec<String>>;

fuzz_target!(|data: &[u8]| {
    // The limit comes from the input so that small limits are exercised too.
    let limit = match data.first_chunk::<4>() {
        Some(bytes) => u32::from_le_bytes(*bytes) % (MAX_FRAME_BYTES + 2),
        None => MAX_FRAME_BYTES,
    };

    if let Ok(request) = decode_frame::<Request>(data, limit) {
        let again = encode_frame(&request, MAX_FRAME_BYTES).expect("an accepted frame re-encodes");
        // postcard accepts overlong varints, so bytes may shrink but never grow.
        assert!(again.len() <= data.len());
        let decoded = decode_frame::<Request>(&again, MAX_FRAME_BYTES).expect("re-decode");
        assert_eq!(decoded, request);
    }
    if let Ok(response) = decode_frame::<Response>(data, limit) {
        let again = encode_frame(&response, MAX_FRAME_BYTES).expect("re-encode");
        let decoded = decode_frame::<Response>(&again, MAX_FRAME_BYTES).expect("re-decode");
        assert_eq!(decoded, response);
    }
    if let Ok(request) = decode_envelope::<Request>(data) {
        let again = encode_envelope(&request).expect("an accepted envelope re-encodes");
        assert_eq!(
            decode_envelope::<Request>(&again).expect("re-decode"),
            request
        );
    }
    let _ = decode_envelope::<ResponseEnvelope<(u16, Option<String>)>>(data);
});
