//! SquashFS images (the default .gtbundle) come from people and pipelines we do not control: reading any bytes must never panic or hang.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::read_all(data, bundle::BundleFormat::Squashfs);
});
