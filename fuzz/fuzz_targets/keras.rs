//! The `.keras` reader on arbitrary bytes: the zip, the model JSON inside, then its weights file
//! against the model it describes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = clampnet::keras::archive::read(data) {
        if let Ok(m) = clampnet::keras::parse_model(&a.config) {
            if let (Ok(plan), Some(w)) = (clampnet::model::ModelPlan::new(&m.config.model), a.weights) {
                let _ = clampnet::keras::h5::read_weights(w.clone(), &plan);
                let _ = clampnet::keras::h5::read_optimizer(w, &plan, clampnet::keras::h5::OptimizerLayout::of(&m.config.optimizer));
            }
        }
    }
});
