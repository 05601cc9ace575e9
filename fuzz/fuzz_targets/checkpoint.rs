//! The checkpoint reader on arbitrary bytes, then matching against the reference model.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz-input.safetensors");
    if let Ok((weights, _)) = clampnet::checkpoint::parse(path, data) {
        let plan = clampnet::model::ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
        let _ = clampnet::checkpoint::match_model(path, &weights, &plan);
    }
});
