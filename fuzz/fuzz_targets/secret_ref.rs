//! `secret://<env>/<path>` references and secret paths come from answers
//! files and API bodies: the parser must refuse or accept any text without
//! panicking, and whatever it accepts must be a safe path in a valid
//! environment that prints back to the same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((env, path)) = secrets::path::parse_ref(text) {
        assert_eq!(path.reference(&env), text, "an accepted ref prints back as given");
        for segment in path.as_str().split('/') {
            assert!(!segment.is_empty() && segment != "." && segment != "..");
        }
        assert_eq!(
            secrets::path::parse_for_env(text, &env).map(|p| p.as_str().to_owned()),
            Ok(path.as_str().to_owned())
        );
    }
    let _ = secrets::SecretPath::parse(text);
    let _ = secrets::path::parse_for_env(text, &deploy::ids::EnvId::local());
});
