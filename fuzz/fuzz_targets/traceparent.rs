//! The router's `traceparent` reader: no input panics, and every accepted
//! value writes back to a version-00 header that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use router::traceparent::TraceContext;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(context) = TraceContext::parse(text) {
        assert_eq!(TraceContext::parse(&context.to_header()), Some(context));
    }
});
