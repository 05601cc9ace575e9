//! The IDX reader (raw or gzip) on arbitrary bytes: errors are fine, panics are bugs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz-input");
    for rank in [1, 3] {
        let _ = clampnet::data::decode_idx(path, data, rank);
    }
});
