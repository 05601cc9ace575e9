//! The recorded step, pinned: for the reference model, the odd test models and the two-conv config, in
//! both kernel sets, fused and not, the list of dispatches (kernel, GATE variant, grid, and every binding:
//! slot, buffer, byte range) must equal the golden listing in tests/golden/dispatches/. A refactor of the
//! recording code keeps these files unchanged; a change of what runs on the GPU changes them, in a commit
//! that says why. `CLAMPNET_BLESS=1 cargo test --release --test dispatch_plan` rewrites them.

mod common;

use clampnet::config::Config;
use clampnet::data::Split;
use clampnet::gpu::KernelSet;
use clampnet::model::{init_weights, ModelPlan, ModelSpec};
use clampnet::optim::{GradClip, Settings};
use clampnet::trainer::{Setup, Trainer};
use common::*;

fn split(n: usize, plan: &ModelPlan) -> Split {
    let [h, w, c] = plan.spec.input;
    Split {
        images: vec![0; n * h * w * c],
        labels: vec![0; n],
        height: h,
        width: w,
        channels: c,
    }
}

#[test]
fn recorded_steps_match_the_golden_listings() {
    let (ctx, _g) = gpu();
    let two_conv = Config::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/two_conv.toml"),
    )
    .unwrap()
    .model;
    let mut models: Vec<(String, ModelSpec, usize)> =
        vec![("reference".into(), ModelSpec::reference(), 32)];
    for (i, m) in odd_models().into_iter().enumerate() {
        models.push((format!("odd{i}"), m, 5));
    }
    models.push(("two_conv".into(), two_conv, 32));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/dispatches");
    let bless = std::env::var_os("CLAMPNET_BLESS").is_some();
    let mut failures = Vec::new();
    for (mi, (name, spec, batch)) in models.into_iter().enumerate() {
        let plan = ModelPlan::new(&spec).unwrap();
        // a short last batch in training and in evaluation; every restriction kind and a gradient clipping
        let (train, test) = (split(2 * batch + 3, &plan), split(batch + 1, &plan));
        let res = every_restriction(&plan);
        let h = Settings {
            weight_decay: 0.01,
            clip: [
                GradClip::Norm(1.0),
                GradClip::GlobalNorm(1.0),
                GradClip::Value(0.5),
                GradClip::None,
            ][mi % 4],
            ..Settings::default()
        };
        let w0 = init_weights(&plan, 0);
        let mut text = String::new();
        for (fuse, set) in [
            (true, KernelSet::Cpu),
            (true, KernelSet::Gpu),
            (false, KernelSet::Cpu),
            (false, KernelSet::Gpu),
        ] {
            let setup = Setup {
                fuse,
                kernel_set: Some(set),
                ..Setup::new(plan.clone(), res.clone(), h, batch)
            };
            let t = Trainer::new(ctx, setup, &train, &test, &w0).unwrap();
            text.push_str(&format!("== fuse {fuse}, {} kernel set\n", set.name()));
            text.push_str(&t.dispatch_listing().unwrap());
        }
        let path = dir.join(format!("{name}.txt"));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != text {
            let line = want
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(want.lines().count().min(text.lines().count()));
            failures.push(format!(
                "{name}: first difference at line {}:\n  golden:   {}\n  recorded: {}",
                line + 1,
                want.lines().nth(line).unwrap_or("(end)"),
                text.lines().nth(line).unwrap_or("(end)")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "recorded steps differ from tests/golden/dispatches:\n{}",
        failures.join("\n")
    );
}
