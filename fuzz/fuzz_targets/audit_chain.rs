//! Audit logs are verified by `env doctor` and may be tampered with:
//! verifying any text must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = deploy::audit::verify_chain(text.lines());
    for line in text.lines() {
        let _ = deploy::audit::line_hash(line);
    }
});
