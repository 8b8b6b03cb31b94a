//! Fuzzes the receive path of the encrypted gossip transport: open the
//! sealed datagram (version, length, trial decryption under the keyring),
//! then decode the plaintext with chitchat's own deserializer through the
//! loopback codec. Nothing here may panic, hang or grow without bound.
//!
//! The first input byte picks the mode:
//! - even: the rest is a raw datagram off the network (almost always
//!   rejected before chitchat; exercises every length and header check);
//! - odd: the rest is sealed with the fuzz key first, so arbitrary bytes
//!   reach chitchat's deserializer as if sent by a key holder.

#![no_main]

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use libfuzzer_sys::fuzz_target;
use membership::{ClusterKey, GossipPacketDecoder, Keyring, SharedKeyring, seal_packet};

const FUZZ_KEY: [u8; 32] = [0x42; 32];
const FUZZ_NONCE: [u8; 24] = [0x07; 24];

struct Harness {
    runtime: tokio::runtime::Runtime,
    decoder: GossipPacketDecoder,
}

static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

fn harness() -> &'static Mutex<Harness> {
    HARNESS.get_or_init(|| {
        // Without a runtime and the loopback sockets no input can be run at
        // all, so failing loudly at start-up is the right outcome here.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fuzz harness needs a tokio runtime");
        let keyring = SharedKeyring::new(Keyring::single(ClusterKey::from_bytes(FUZZ_KEY)));
        let decoder = runtime
            .block_on(GossipPacketDecoder::open(keyring, Arc::default()))
            .expect("fuzz harness needs the loopback codec sockets");
        Mutex::new(Harness { runtime, decoder })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let mut guard = harness().lock().unwrap_or_else(PoisonError::into_inner);
    let Harness { runtime, decoder } = &mut *guard;
    if mode % 2 == 0 {
        let _ = runtime.block_on(decoder.decode(rest));
    } else if let Ok(packet) = seal_packet(&ClusterKey::from_bytes(FUZZ_KEY), &FUZZ_NONCE, rest) {
        let _ = runtime.block_on(decoder.decode(&packet));
    }
});
