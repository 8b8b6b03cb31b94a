//! `--answers` payloads come from operators and pipelines: every payload
//! type must parse or refuse arbitrary JSON and YAML without panicking, and
//! whatever parses must survive a serialize/parse round trip.
#![no_main]

use deploy::command::*;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<T: DeserializeOwned + Serialize>(text: &str) {
    if let Ok(value) = serde_json::from_str::<T>(text) {
        let json = serde_json::to_string(&value).expect("a parsed payload serializes");
        serde_json::from_str::<T>(&json).expect("a serialized payload parses again");
    }
    let _ = serde_norway::from_str::<T>(text);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check::<EnvInitAnswers>(text);
    check::<EnvCreateAnswers>(text);
    check::<EnvUpdateAnswers>(text);
    check::<EnvRestoreAnswers>(text);
    check::<PackBindAnswers>(text);
    check::<BundleAddAnswers>(text);
    check::<BundleUpdateAnswers>(text);
    check::<RevisionStageAnswers>(text);
    check::<TrafficSetAnswers>(text);
});
