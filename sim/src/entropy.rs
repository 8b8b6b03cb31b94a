//! One seed for every random choice, including the ones libraries make.
//!
//! The simulation's own choices come from [`SimRng`]. Libraries draw too:
//! openraft randomises election timeouts and chitchat picks gossip peers
//! with `rand::rng()`, which seeds itself from the OS through `getrandom`.
//! Built with `--cfg getrandom_backend="custom"` (only the simulation's own
//! target directory is, see TESTING.md), `getrandom` calls the function
//! below instead, which reads a per-thread stream seeded by the run's seed;
//! every run gets a fresh thread, so a thread-local `rand::rng()` starts
//! from the run's seed too. Without that cfg the libraries' draws come from
//! the OS and a run is reproducible only in its own choices.

use std::cell::RefCell;

#[cfg(getrandom_backend = "custom")]
use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The simulation's random source: ChaCha8 from the run's seed.
pub type SimRng = ChaCha8Rng;

/// Separates the libraries' stream from the simulation's own.
const LIBRARY_STREAM: u64 = 0x6c69_6272_6172_6965;

thread_local! {
    static LIBRARY_ENTROPY: RefCell<ChaCha8Rng> = RefCell::new(ChaCha8Rng::seed_from_u64(LIBRARY_STREAM));
}

/// The simulation's own random source for `seed`.
pub fn sim_rng(seed: u64) -> SimRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Seeds this thread's library entropy for a run of `seed`. Call it first
/// thing on the run's own thread.
pub fn seed_thread(seed: u64) {
    LIBRARY_ENTROPY.with(|entropy| {
        *entropy.borrow_mut() = ChaCha8Rng::seed_from_u64(seed ^ LIBRARY_STREAM);
    });
}

/// Whether library randomness is seeded (the build has the custom
/// getrandom backend), i.e. whether whole runs are reproducible.
pub const fn libraries_are_seeded() -> bool {
    cfg!(all(getrandom_backend = "custom", tokio_unstable))
}

#[cfg(getrandom_backend = "custom")]
fn fill(dest: &mut [u8]) {
    LIBRARY_ENTROPY.with(|entropy| entropy.borrow_mut().fill_bytes(dest));
}

/// getrandom 0.3 and 0.4 both call this symbol under the custom backend.
#[cfg(getrandom_backend = "custom")]
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
unsafe extern "Rust" fn __getrandom_v03_custom(
    dest: *mut u8,
    len: usize,
) -> Result<(), getrandom::Error> {
    // SAFETY: getrandom passes a valid, writable buffer of `len` bytes.
    let buffer = unsafe { std::slice::from_raw_parts_mut(dest, len) };
    fill(buffer);
    Ok(())
}
