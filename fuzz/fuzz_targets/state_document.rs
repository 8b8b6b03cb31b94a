//! `environment.json` and backup snapshots may be edited by hand or
//! damaged: loading and validating any bytes must never panic.
#![no_main]

use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = serde_json::from_slice::<EnvironmentState>(data) {
        let _ = state.validate(&EnvId::local());
        let _ = state.integrity();
        let _ = deploy::runtime_config::RuntimeConfig::project(&state.environment);
    }
});
