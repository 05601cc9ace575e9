//! The Keras model JSON reader (`model.to_json()`, a `.keras` file's config.json) on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = clampnet::keras::parse_model(text) {
            let mut warnings = Vec::new();
            let _ = clampnet::keras::model_json(&m.config, &m.name, &mut warnings);
        }
    }
});
