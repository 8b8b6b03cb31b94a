//! Every message a cluster member accepts from a peer (Raft RPCs, snapshots,
//! forwarded writes, joins) and every answer it accepts back: decoding any
//! bytes never panics, and what decodes re-encodes.
#![no_main]

use consensus::{PeerRequest, PeerResponse};
use libfuzzer_sys::fuzz_target;
use transport::wire::{MAX_FRAME_BYTES, decode_envelope, encode_envelope};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_FRAME_BYTES as usize {
        return;
    }
    if let Ok(request) = decode_envelope::<PeerRequest>(data) {
        let again = encode_envelope(&request).expect("an accepted request re-encodes");
        decode_envelope::<PeerRequest>(&again).expect("and decodes again");
    }
    if let Ok(response) = decode_envelope::<PeerResponse>(data) {
        let again = encode_envelope(&response).expect("an accepted response re-encodes");
        decode_envelope::<PeerResponse>(&again).expect("and decodes again");
    }
});
