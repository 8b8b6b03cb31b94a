//! ZIP bundles and nested .gtpack files: reading any bytes must never panic.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::read_all(data, bundle::BundleFormat::Zip);
});
