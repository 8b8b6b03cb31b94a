//! tar, tar.gz and tar.zst bundles: reading any bytes must never panic.
//! The first byte picks the compression so one corpus covers all three.
#![no_main]

mod common;

use bundle::BundleFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((selector, rest)) = data.split_first() else {
        return;
    };
    let format = match selector % 3 {
        0 => BundleFormat::Tar,
        1 => BundleFormat::TarGz,
        _ => BundleFormat::TarZst,
    };
    common::read_all(rest, format);
});
