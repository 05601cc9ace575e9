//! Per-kernel timing of one training step of the reference model: `cargo run --release --example profile [BATCH]`.
use clampnet::gpu::{Context, GpuOptions};
use clampnet::model::{ModelPlan, ModelSpec};
use clampnet::restrict::{Preset, Restrictions};
use clampnet::train::{init_weights, Hyper, Trainer};

fn main() -> clampnet::Result<()> {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let ds = clampnet::data::load_embedded_sample()?;
    let plan = ModelPlan::new(&ModelSpec::reference())?;
    let r = Restrictions::preset(Preset::L1l2, &plan);
    let w = init_weights(&plan, 0);
    let ctx = Context::new(&GpuOptions::default())?;
    let t = Trainer::new(
        &ctx,
        plan,
        r,
        Hyper::default(),
        batch,
        &ds.train,
        &ds.test,
        &w,
    )?;
    let prof = t.profile_step(20)?;
    let total: f64 = prof.iter().map(|p| p.1).sum();
    for (k, s) in &prof {
        println!(
            "{:<28} {:>9.1} us {:>5.1}%",
            format!("{k:?}"),
            s * 1e6,
            100.0 * s / total
        );
    }
    println!(
        "{:<28} {:>9.1} us  => {:.0} images/s",
        "total",
        total * 1e6,
        batch as f64 / total
    );
    Ok(())
}
