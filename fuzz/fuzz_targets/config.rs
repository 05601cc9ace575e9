//! The TOML config parser (and the model plan it builds) on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = clampnet::config::Config::parse(text) {
            let _ = clampnet::model::ModelPlan::new(&cfg.model);
        }
    }
});
