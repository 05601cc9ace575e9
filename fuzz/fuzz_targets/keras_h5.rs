//! The Keras weights reader (`.weights.h5`) on arbitrary bytes, against the reference model.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let plan = clampnet::model::ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
    let _ = clampnet::keras::h5::read_weights(data.to_vec(), &plan);
    let _ = clampnet::keras::h5::read_optimizer(data.to_vec(), &plan, clampnet::keras::h5::OptimizerLayout::of(&Default::default()));
});
