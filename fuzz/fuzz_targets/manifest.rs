//! bundle-manifest.json and bundle.yaml come inside untrusted bundles:
//! parsing and combining any bytes must never panic, and an accepted
//! runtime section always validates.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (json, yaml) = data.split_at(data.len() / 2);
    for (json, yaml) in [
        (Some(data), None),
        (None, Some(data)),
        (Some(json), Some(yaml)),
    ] {
        if let Ok(description) = bundle::manifest::describe(json, yaml) {
            if let Some(runtime) = &description.runtime {
                assert!(runtime.validate().is_ok());
            }
        }
    }
});
