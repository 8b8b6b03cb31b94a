//! Identifier grammars: no input panics, and every accepted environment id
//! is one safe path segment.
#![no_main]

use deploy::canonical::ContentDigest;
use deploy::descriptor::PackDescriptor;
use deploy::ids::{EnvId, RevisionId};
use deploy::refs::{RuntimeRef, SecretRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = text.parse::<EnvId>() {
        let path = std::path::Path::new(env.as_str());
        assert_eq!(path.components().count(), 1);
        assert!(matches!(
            path.components().next(),
            Some(std::path::Component::Normal(_))
        ));
        assert!(!env.as_str().starts_with('.'));
    }
    if let Ok(descriptor) = text.parse::<PackDescriptor>() {
        assert_eq!(
            format!("{}@{}", descriptor.path(), descriptor.version()),
            text
        );
    }
    if let Ok(reference) = text.parse::<SecretRef>() {
        assert!(reference.env_segment().parse::<EnvId>().is_ok());
        assert!(
            !reference
                .path()
                .split('/')
                .any(|s| s == ".." || s.is_empty())
        );
    }
    let _ = text.parse::<RuntimeRef>();
    let _ = text.parse::<ContentDigest>();
    let _ = text.parse::<RevisionId>();
});
