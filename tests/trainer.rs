//! The whole GPU trainer against the CPU twin on models of odd sizes: several steps with a shuffled
//! order and a short last batch, every regularizer and constraint kind, then the evaluation metrics.

mod common;

use clampnet::data::Split;
use clampnet::model::init_weights;
use clampnet::model::ModelPlan;
use clampnet::optim::{GradClip, Method, Schedule, Settings};
use clampnet::reference as r;
use clampnet::restrict::{Constraint, Restrictions};
use clampnet::trainer::{epoch_order, Setup, Trainer};
use common::*;

fn random_split(rng: &mut TestRng, n: usize, plan: &ModelPlan) -> Split {
    let [h, w, c] = plan.spec.input;
    Split {
        images: (0..n * h * w * c)
            .map(|_| (rng.next_u32() % 256) as u8)
            .collect(),
        labels: (0..n)
            .map(|_| rng.next_u32() % plan.classes as u32)
            .collect(),
        height: h,
        width: w,
        channels: c,
    }
}

/// Every optimizer with a schedule through the whole trainer, 2 epochs of 3 steps (the schedule's table
/// rewritten per epoch from the step count), against the twin; the optimizer's slots too. No proximal
/// L1 (undefined with momentum).
#[test]
fn trainer_matches_twin_with_every_optimizer_and_schedule() {
    let (ctx, _g) = gpu();
    let mut rng = TestRng::new(22);
    let spec = odd_models().remove(1);
    let plan = ModelPlan::new(&spec).unwrap();
    let (n_train, n_test, batch) = (13usize, 4usize, 5usize);
    let train = random_split(&mut rng, n_train, &plan);
    let test = random_split(&mut rng, n_test, &plan);
    let mut res = every_restriction(&plan);
    for (_, t) in res.tensors.iter_mut() {
        if let Some(r) = t.regularizer.as_mut() {
            r.proximal = false;
        }
    }
    let mut pieces = Schedule::PiecewiseConstantDecay {
        n: 2,
        boundaries: [0; 16],
        values: [0.0; 17],
    };
    if let Schedule::PiecewiseConstantDecay {
        boundaries, values, ..
    } = &mut pieces
    {
        boundaries[..2].copy_from_slice(&[1, 3]);
        values[..3].copy_from_slice(&[0.01, 0.004, 0.001]);
    }
    let cases = [
        (
            Method::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            Schedule::ExponentialDecay {
                decay_steps: 2.0,
                decay_rate: 0.7,
                staircase: true,
            },
        ),
        (
            Method::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            pieces,
        ),
        (
            Method::RmsProp {
                rho: 0.85,
                momentum: 0.3,
                eps: 1e-6,
                centered: true,
            },
            Schedule::CosineDecay {
                decay_steps: 4.0,
                alpha: 0.2,
                warmup_target: Some(0.004),
                warmup_steps: 2.0,
            },
        ),
        (
            Method::keras_default("adamw").unwrap(),
            Schedule::InverseTimeDecay {
                decay_steps: 1.0,
                decay_rate: 0.5,
                staircase: false,
            },
        ),
    ];
    for (method, schedule) in cases {
        let h = Settings {
            lr: if matches!(schedule, Schedule::PiecewiseConstantDecay { .. }) {
                0.01
            } else {
                3e-3
            },
            weight_decay: 0.02,
            clip: GradClip::Norm(0.5),
            method,
            schedule,
        };
        let what = format!("{method:?} {schedule:?}");
        let w0 = init_weights(&plan, 3);
        let mut t = Trainer::new(
            ctx,
            Setup::new(plan.clone(), res.clone(), h, batch),
            &train,
            &test,
            &w0,
        )
        .unwrap();
        let mut w = w0.clone();
        let sizes: Vec<usize> = w.iter().map(|t| t.len()).collect();
        let mut slots = r::zero_slots(&h, &sizes);
        let mut step = 0u64;
        for epoch in 1..=2 {
            let order = epoch_order(n_train, 5, epoch, true);
            t.train_epoch(epoch, &order, &mut |_| {}).unwrap();
            for b in 0..n_train.div_ceil(batch) {
                let rows = batch.min(n_train - b * batch);
                let (x, y) = r::gather_batch(
                    &train.images,
                    &train.labels,
                    &order,
                    b,
                    batch,
                    rows,
                    plan.input_len(),
                );
                step += 1;
                r::reference_step(
                    &plan,
                    &res,
                    (&h, &Default::default()),
                    &mut w,
                    &mut slots,
                    (step, 0),
                    &x,
                    &y,
                );
            }
            r::reference_epoch_end(&plan, &res, &mut w);
            for (i, (name, _, got)) in t.weights().unwrap().into_iter().enumerate() {
                assert_close(
                    &format!("{what} epoch {epoch} {name}"),
                    &got,
                    &w[i],
                    2e-5,
                    1e-4,
                );
            }
        }
        let got = t.optimizer_slots().unwrap();
        assert_eq!(got.len(), method.slot_names().len(), "{what}");
        for ((name, tensors), want) in got.iter().zip(&slots) {
            for (i, g) in tensors.iter().enumerate() {
                assert_close(&format!("{what} slot {name} {i}"), g, &want[i], 1e-6, 1e-3);
            }
        }
    }
}

#[test]
fn trainer_matches_twin_on_odd_models() {
    let (ctx, _g) = gpu();
    let mut rng = TestRng::new(21);
    for (mi, spec) in odd_models().into_iter().enumerate() {
        let plan = ModelPlan::new(&spec).unwrap();
        let (n_train, n_test, batch) = (13usize, 11usize, 5usize); // 3 steps, the last of 3 rows
        let train = random_split(&mut rng, n_train, &plan);
        let test = random_split(&mut rng, n_test, &plan);
        let res = every_restriction(&plan);
        // each model also exercises one of Keras' gradient clippings, and weight decay
        let clip = [
            GradClip::Norm(0.05),
            GradClip::GlobalNorm(0.1),
            GradClip::Value(0.002),
        ][mi % 3];
        let h = Settings {
            lr: 3e-3,
            weight_decay: 0.05,
            clip,
            ..Settings::default()
        };
        let w0 = init_weights(&plan, mi as u64);
        let mut t = Trainer::new(
            ctx,
            Setup::new(plan.clone(), res.clone(), h, batch),
            &train,
            &test,
            &w0,
        )
        .unwrap();
        let mut w = w0.clone();
        let sizes: Vec<usize> = w.iter().map(|t| t.len()).collect();
        let mut slots = r::zero_slots(&h, &sizes);
        let mut step = 0u64;
        for epoch in 1..=2 {
            let order = epoch_order(n_train, 7, epoch, true);
            let stats = t.train_epoch(epoch, &order, &mut |_| {}).unwrap();
            let mut loss_sum = 0.0;
            let mut last_grads = Vec::new();
            for b in 0..n_train.div_ceil(batch) {
                let rows = batch.min(n_train - b * batch);
                let (x, y) = r::gather_batch(
                    &train.images,
                    &train.labels,
                    &order,
                    b,
                    batch,
                    rows,
                    plan.input_len(),
                );
                step += 1;
                let w64: Vec<Vec<f64>> = w
                    .iter()
                    .map(|t| t.iter().map(|&a| a as f64).collect())
                    .collect();
                let x64: Vec<f64> = x.iter().map(|&a| a as f64).collect();
                last_grads = r::model_loss_grads(&plan, &w64, &x64, &y).1;
                loss_sum += r::reference_step(
                    &plan,
                    &res,
                    (&h, &Default::default()),
                    &mut w,
                    &mut slots,
                    (step, 0),
                    &x,
                    &y,
                ) * rows as f64;
            }
            r::reference_epoch_end(&plan, &res, &mut w);
            let what = format!("model {mi} epoch {epoch}");
            assert_close64(
                &format!("{what} train loss"),
                &[stats.train.loss],
                &[loss_sum / n_train as f64],
                1e-5,
                1e-4,
            );
            assert_eq!(stats.train.count, n_train);
            for (i, (name, _, got)) in t.weights().unwrap().into_iter().enumerate() {
                assert_close(&format!("{what} {name}"), &got, &w[i], 2e-5, 1e-4);
            }
            // gradients of the last (short) batch
            for (i, (name, _, got)) in t.gradients().unwrap().into_iter().enumerate() {
                assert_close64(
                    &format!("{what} last-batch gradient {name}"),
                    &got.iter().map(|&a| a as f64).collect::<Vec<_>>(),
                    &last_grads[i],
                    1e-5,
                    1e-4,
                );
            }
        }
        // evaluation: data loss + regularization loss, accuracy, over the test set in batches of 5
        let e = t.evaluate().unwrap();
        let w64: Vec<Vec<f64>> = t
            .weights()
            .unwrap()
            .into_iter()
            .map(|(_, _, v)| v.iter().map(|&a| a as f64).collect())
            .collect();
        let x: Vec<f64> = test.images.iter().map(|&p| p as f64 / 255.0).collect();
        let (data_loss, _, _, correct) = r::model_loss_grads(&plan, &w64, &x, &test.labels);
        let reg: f64 = plan
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let g = res
                    .get(&p.name)
                    .and_then(|t| t.regularizer)
                    .unwrap_or_default();
                let w32: Vec<f32> = w64[i].iter().map(|&a| a as f32).collect();
                r::regularization_loss(&w32, g.l1, g.l2)
            })
            .sum();
        assert_close64(
            &format!("model {mi} eval loss"),
            &[e.loss],
            &[data_loss + reg],
            1e-5,
            1e-4,
        );
        assert_eq!(
            (e.accuracy * n_test as f64).round() as usize,
            correct,
            "model {mi} eval accuracy"
        );
    }
}

#[test]
fn constraints_hold_after_every_step_and_never_touch_initial_weights() {
    // Keras applies constraints after each optimizer step, never to the initial weights.
    let (ctx, _g) = gpu();
    let mut rng = TestRng::new(22);
    let plan = ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
    let data = random_split(&mut rng, 40, &plan);
    let mut res = Restrictions::default();
    res.entry("conv2d.kernel")
        .constraints
        .push(Constraint::UnitNorm {
            axes: vec![0, 1, 2],
        });
    res.entry("conv2d.bias")
        .constraints
        .push(Constraint::ClipByValue {
            lo: -0.001,
            hi: 0.001,
        });
    let mut w0 = init_weights(&plan, 3);
    w0[1].iter_mut().for_each(|b| *b = 0.5); // outside the clip range
    let t = Trainer::new(
        ctx,
        Setup::new(plan.clone(), res.clone(), Settings::default(), 8),
        &data,
        &data,
        &w0,
    )
    .unwrap();
    let before = t.weights().unwrap();
    assert_eq!(
        before[1].2,
        vec![0.5; 32],
        "initial weights are not constrained"
    );
    let mut t = t;
    t.train_epoch(1, &epoch_order(40, 0, 1, true), &mut |_| {})
        .unwrap();
    let after = t.weights().unwrap();
    assert!(after[1].2.iter().all(|b| b.abs() <= 0.001));
    let k = &after[0].2;
    for o in 0..32 {
        let n: f32 = (0..9)
            .map(|i| k[i * 32 + o] * k[i * 32 + o])
            .sum::<f32>()
            .sqrt();
        assert!((n - 1.0).abs() < 1e-5, "filter {o}: norm {n}");
    }
}

#[test]
fn data_larger_than_a_storage_binding_is_refused_before_any_upload() {
    let (ctx, _g) = gpu();
    let plan = ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
    let limit = ctx.limits.max_storage_buffer_binding_size as usize;
    let n = limit / 784 + 1;
    let big = Split {
        images: vec![0; n * 784],
        labels: vec![0; n],
        height: 28,
        width: 28,
        channels: 1,
    };
    let small = Split {
        images: vec![0; 784],
        labels: vec![0],
        height: 28,
        width: 28,
        channels: 1,
    };
    let w = init_weights(&plan, 0);
    let e = Trainer::new(
        ctx,
        Setup::new(plan, Restrictions::default(), Settings::default(), 32),
        &big,
        &small,
        &w,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        e.contains("max_storage_buffer_binding_size") && e.contains("train images"),
        "{e}"
    );
}

/// A run's (train loss, test loss, test accuracy, weights).
type Trained = (f64, f64, f64, clampnet::checkpoint::Weights);

/// Two runs that train alike, to f32 rounding: the losses and accuracy, then every weight tensor.
fn assert_trained_alike(what: &str, a: &Trained, b: &Trained) {
    assert_close64(
        &format!("{what} losses"),
        &[a.0, a.1, a.2],
        &[b.0, b.1, b.2],
        1e-6,
        1e-5,
    );
    for ((name, _, x), (_, _, y)) in a.3.iter().zip(&b.3) {
        assert_close(&format!("{what} {name}"), x, y, 1e-6, 1e-5);
    }
}

#[test]
fn both_kernel_sets_fused_or_not_train_alike() {
    use clampnet::gpu::KernelSet;
    let (ctx, _g) = gpu();
    let mut rng = TestRng::new(23);
    let mut specs = odd_models();
    specs.push(clampnet::model::ModelSpec::reference());
    for (mi, spec) in specs.into_iter().enumerate() {
        let plan = ModelPlan::new(&spec).unwrap();
        let fused: Vec<bool> = clampnet::model::fuse::lower(&plan, KernelSet::Cpu, true)
            .iter()
            .map(|op| op.fusion.is_some())
            .collect();
        let train = random_split(&mut rng, 29, &plan);
        let res = every_restriction(&plan);
        let h = Settings {
            lr: 3e-3,
            ..Settings::default()
        };
        let w0 = init_weights(&plan, 5);
        let mut results = Vec::new();
        // the separate kernels (CPU shapes) first, then the fused passes and the GPU shapes
        let variants = [
            (false, KernelSet::Cpu),
            (true, KernelSet::Cpu),
            (true, KernelSet::Gpu),
            (false, KernelSet::Gpu),
        ];
        for (fuse, set) in variants {
            let setup = Setup {
                fuse,
                kernel_set: Some(set),
                ..Setup::new(plan.clone(), res.clone(), h, 8)
            };
            let mut t = Trainer::new(ctx, setup, &train, &train, &w0).unwrap();
            let s = t
                .train_epoch(1, &epoch_order(29, 1, 1, true), &mut |_| {})
                .unwrap();
            let e = t.evaluate().unwrap();
            results.push((s.train.loss, e.loss, e.accuracy, t.weights().unwrap()));
        }
        for (b, (fuse, set)) in results[1..].iter().zip(&variants[1..]) {
            let what = format!("model {mi} fused {fuse} ({fused:?}) {set:?}");
            assert_trained_alike(&what, &results[0], b);
        }
    }
}

/// The loss computed at the end of the last dense op's forward (`Op::forward_with_loss`, one dispatch
/// fewer) trains bit for bit as the separate loss kernel does: both kernel sets, label smoothing and
/// class weights, a short last batch, the odd models (3, 4 and 5 classes), the reference (10) and a
/// 16-class head; a 17-class head keeps the separate kernel.
#[test]
fn the_loss_fused_into_the_last_dense_forward_is_bit_identical() {
    use clampnet::gpu::KernelSet;
    let (ctx, _g) = gpu();
    let mut rng = TestRng::new(31);
    let mut specs = odd_models();
    specs.push(clampnet::model::ModelSpec::reference());
    // 16 classes: the registers' every logit; 17: too wide, the separate loss kernel
    specs.extend([wide_head(16), wide_head(17)]);
    for (mi, spec) in specs.into_iter().enumerate() {
        let plan = ModelPlan::new(&spec).unwrap();
        let fused_expected = plan.classes <= 16;
        let train = random_split(&mut rng, 29, &plan);
        let test = random_split(&mut rng, 11, &plan);
        let w0 = init_weights(&plan, 3);
        let weights: Vec<f32> = (0..plan.classes).map(|k| 0.5 + k as f32 * 0.25).collect();
        for set in [KernelSet::Cpu, KernelSet::Gpu] {
            for (smoothing, class_weight) in [(0.0, None), (0.1, Some(weights.clone()))] {
                let mut results = Vec::new();
                for fuse_loss in [false, true] {
                    // batch 18 in the CPU set: two workgroups of the reduce with the loss
                    let batch = if set == KernelSet::Cpu { 18 } else { 8 };
                    let mut setup = Setup {
                        fuse_loss,
                        kernel_set: Some(set),
                        class_weight: class_weight.clone(),
                        ..Setup::new(plan.clone(), Default::default(), Settings::default(), batch)
                    };
                    if smoothing != 0.0 {
                        setup.loss.kind = clampnet::losses::LossKind::Categorical;
                        setup.loss.label_smoothing = smoothing;
                    }
                    let mut t = Trainer::new(ctx, setup, &train, &test, &w0).unwrap();
                    let listing = t.dispatch_listing().unwrap();
                    assert_eq!(
                        !listing.contains("SoftmaxXent"),
                        fuse_loss && fused_expected,
                        "model {mi} {set:?}: the loss kernel runs exactly where not fused"
                    );
                    let mut losses = Vec::new();
                    for epoch in 1..=2 {
                        let order = epoch_order(29, 1, epoch, true);
                        let s = t.train_epoch(epoch, &order, &mut |_| {}).unwrap();
                        let e = t.evaluate().unwrap();
                        losses.extend([s.train.loss, s.train.accuracy, e.loss, e.accuracy]);
                    }
                    let w: Vec<Vec<f32>> = t
                        .weights()
                        .unwrap()
                        .into_iter()
                        .map(|(_, _, w)| w)
                        .collect();
                    results.push((losses, w));
                }
                let what = format!("model {mi} {set:?} smoothing {smoothing}");
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&results[0].0), bits(&results[1].0), "{what}: metrics");
                for (i, (a, b)) in results[0].1.iter().zip(&results[1].1).enumerate() {
                    let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{what}: weight tensor {i} differs");
                }
            }
        }
    }
}

/// The opt-in subgroup path trains as the baseline does, to rounding: the GPU kernel set on a device with
/// subgroups (`--subgroups`) against the same set without, the odd models and the reference, its dense
/// forward (with the loss) the subgroup kernel. Skipped, saying so, where the adapter lacks subgroups.
#[test]
fn the_subgroup_kernels_train_as_the_baseline_does() {
    use clampnet::gpu::KernelSet;
    let (sub, _g) = gpu_subgroups();
    if !sub.subgroups {
        eprintln!("skipped: {} has no subgroup feature", sub.info.name);
        return;
    }
    drop(_g);
    let mut rng = TestRng::new(41);
    let mut specs = odd_models();
    specs.push(clampnet::model::ModelSpec::reference());
    for (mi, spec) in specs.into_iter().enumerate() {
        let plan = ModelPlan::new(&spec).unwrap();
        let train = random_split(&mut rng, 29, &plan);
        let w0 = init_weights(&plan, 7);
        let mut results = Vec::new();
        for subgroups in [false, true] {
            let (ctx, _g) = if subgroups { gpu_subgroups() } else { gpu() };
            let setup = Setup {
                kernel_set: Some(KernelSet::Gpu),
                ..Setup::new(
                    plan.clone(),
                    every_restriction(&plan),
                    Settings::default(),
                    8,
                )
            };
            let mut t = Trainer::new(ctx, setup, &train, &train, &w0).unwrap();
            let listing = t.dispatch_listing().unwrap();
            assert_eq!(
                listing.contains("Subgroups"),
                subgroups,
                "model {mi}: the subgroup kernels run exactly where opted in to:\n{listing}"
            );
            let s = t
                .train_epoch(1, &epoch_order(29, 1, 1, true), &mut |_| {})
                .unwrap();
            let e = t.evaluate().unwrap();
            results.push((s.train.loss, e.loss, e.accuracy, t.weights().unwrap()));
        }
        let what = format!("model {mi} with subgroups");
        assert_trained_alike(&what, &results[0], &results[1]);
    }
}

/// The GPU set's tiled kernels (`--gpu-tiles`: the dense forward 4 examples per workgroup, the dense
/// weight gradient with the incoming gradient staged in workgroup memory, the fused conv + pool forward
/// with its input rows staged) train bit for bit as the untiled ones: the odd models (valid and same
/// padding, leftover pool rows, RGB), the reference and the two-conv config, every restriction, relu
/// dense layers (GATE) and short batches (1 to 7 rows past a multiple of 4 or 16).
#[test]
fn the_tiled_gpu_kernels_train_bit_identically() {
    use clampnet::gpu::KernelSet;
    if gl_pass() {
        eprintln!("skipped on the GL pass (common::gl_pass)");
        return;
    }
    let mut rng = TestRng::new(43);
    let mut specs = odd_models();
    specs.push(clampnet::model::ModelSpec::reference());
    // two fused conv + pool ops, the second over 32 channels
    let two_conv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/two_conv.toml");
    specs.push(clampnet::config::Config::load(&two_conv).unwrap().model);
    // 16 outputs: every quad of the tiles holds outputs
    specs.push(wide_head(16));
    let mut conv_tiled = 0;
    for (mi, spec) in specs.into_iter().enumerate() {
        let plan = ModelPlan::new(&spec).unwrap();
        let train = random_split(&mut rng, 45, &plan);
        let test = random_split(&mut rng, 13, &plan);
        let w0 = init_weights(&plan, 9);
        for batch in [7, 18] {
            let mut results = Vec::new();
            let mut untiled_convs = 0;
            for tiles in [false, true] {
                let (ctx, _g) = if tiles { gpu_tiles() } else { gpu() };
                let setup = Setup {
                    kernel_set: Some(KernelSet::Gpu),
                    ..Setup::new(
                        plan.clone(),
                        every_restriction(&plan),
                        Settings::default(),
                        batch,
                    )
                };
                let mut t = Trainer::new(ctx, setup, &train, &test, &w0).unwrap();
                let listing = t.dispatch_listing().unwrap();
                // every fused conv forward of every plan tiled (all fit), none without the option
                let (plain, tiled) = (
                    listing.matches("Conv2dReluMaxPool2ForwardGpu").count(),
                    listing.matches("Conv2dReluMaxPool2ForwardTiledGpu").count(),
                );
                match tiles {
                    false => untiled_convs = plain,
                    true => assert_eq!(
                        (plain, tiled),
                        (0, untiled_convs),
                        "model {mi}: tiled convs"
                    ),
                }
                conv_tiled += tiled;
                assert_eq!(
                    listing.contains("DenseBackwardWeightTiledGpu"),
                    tiles,
                    "model {mi}: the tiled kernels run exactly where opted in to:\n{listing}"
                );
                let mut m = Vec::new();
                for epoch in 1..=2 {
                    let order = epoch_order(45, 1, epoch, true);
                    let s = t.train_epoch(epoch, &order, &mut |_| {}).unwrap();
                    let e = t.evaluate().unwrap();
                    m.extend([s.train.loss, s.train.accuracy, e.loss, e.accuracy]);
                }
                let w: Vec<Vec<u32>> = t
                    .weights()
                    .unwrap()
                    .into_iter()
                    .map(|(_, _, w)| w.iter().map(|v| v.to_bits()).collect())
                    .collect();
                results.push((m.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), w));
            }
            let what = format!("model {mi} batch {batch} tiled");
            assert_eq!(results[0].0, results[1].0, "{what}: metrics");
            for (i, (a, b)) in results[0].1.iter().zip(&results[1].1).enumerate() {
                assert!(a == b, "{what}: weight tensor {i} differs");
            }
        }
    }
    // models 0, 1, the reference and the 16-class head have a fused conv, two_conv two
    assert!(conv_tiled > 0, "tiled conv forwards: none");
}

#[test]
fn an_epoch_stopped_midway_and_resumed_in_a_new_trainer_is_bit_identical() {
    let (ctx, _g) = gpu();
    let mut rng = TestRng::new(24);
    let plan = ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
    let data = random_split(&mut rng, 4096, &plan); // 128 steps of 32: two chunks of 64
    let res = Restrictions::preset(clampnet::restrict::Preset::Combo, &plan);
    let h = Settings::default();
    let w0 = init_weights(&plan, 2);
    let order = epoch_order(4096, 9, 1, true);
    let mut straight = Trainer::new(
        ctx,
        Setup::new(plan.clone(), res.clone(), h, 32),
        &data,
        &data,
        &w0,
    )
    .unwrap();
    straight.train_epoch(1, &order, &mut |_| {}).unwrap();

    let mut first = Trainer::new(
        ctx,
        Setup::new(plan.clone(), res.clone(), h, 32),
        &data,
        &data,
        &w0,
    )
    .unwrap();
    let asked = std::cell::Cell::new(0);
    // stop when asked a second time: after the first chunk of 64 steps
    let stop = || {
        asked.set(asked.get() + 1);
        asked.get() > 1
    };
    let s = first
        .train_range(1, &order, 0, usize::MAX, &stop, &mut |_| {})
        .unwrap();
    assert_eq!((s.next_step, s.completed, first.step), (64, false, 64));
    let (m, v) = first.optimizer_state().unwrap();
    let w: Vec<Vec<f32>> = first.weights().unwrap().into_iter().map(|t| t.2).collect();
    let mut second = Trainer::new(ctx, Setup::new(plan, res, h, 32), &data, &data, &w).unwrap();
    second.set_optimizer_state(&m, &v, 64).unwrap();
    let s = second
        .train_range(1, &order, 64, usize::MAX, &|| false, &mut |_| {})
        .unwrap();
    assert_eq!((s.steps, s.completed, second.step), (64, true, 128));
    assert!(
        second.weights().unwrap() == straight.weights().unwrap(),
        "weights bit-identical"
    );
    assert!(
        second.optimizer_state().unwrap() == straight.optimizer_state().unwrap(),
        "Adam state bit-identical"
    );
}

#[test]
fn a_model_too_large_for_a_binding_is_refused_before_any_allocation() {
    let (ctx, _g) = gpu();
    use clampnet::layers::{Dense, Flatten};
    use clampnet::model::{Activation, ModelSpec};
    // 28*28 -> 60,000 units: 47 million weights = 188 MB, over the 128 MiB baseline binding
    let spec = ModelSpec {
        input: [28, 28, 1],
        layers: vec![
            Flatten::new().into(),
            Dense::new(60_000, Activation::Relu).into(),
            Dense::new(10, Activation::Softmax).into(),
        ],
        names: Vec::new(),
    };
    let plan = ModelPlan::new(&spec).unwrap();
    let split = Split {
        images: vec![0; 784 * 2],
        labels: vec![0, 1],
        height: 28,
        width: 28,
        channels: 1,
    };
    let w: Vec<Vec<f32>> = plan.params.iter().map(|p| vec![0.0; p.len]).collect();
    let e = Trainer::new(
        ctx,
        Setup::new(plan, Restrictions::default(), Settings::default(), 2),
        &split,
        &split,
        &w,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        e.contains("parameters") && e.contains("max_storage_buffer_binding_size"),
        "{e}"
    );
}

#[test]
fn a_gl_device_that_fails_to_open_gets_a_hint_naming_the_fix() {
    // what an H100 under Linux reported through wgpu's GL backend: a 3.3 context, no compute shaders
    let (ctx, _g) = gpu();
    let mut info = ctx.info.clone();
    info.backend = wgpu::Backend::Gl;
    info.driver_info = "3.3.0 NVIDIA 580.159.04".into();
    let hint = clampnet::gpu::open_failure_hint(&info);
    assert!(
        hint.contains("'3.3.0 NVIDIA 580.159.04'")
            && hint.contains("OpenGL 4.3")
            && hint.contains("--backend vulkan"),
        "{hint}"
    );
    info.backend = wgpu::Backend::Vulkan;
    assert_eq!(clampnet::gpu::open_failure_hint(&info), "");
}

/// Dropout through the whole trainer: two epochs against the twin with the same counter-based masks
/// (the run's seed and a layer's own seed), evaluation in inference (no dropout), and the masks'
/// statistics: the kept fraction is 1 − rate and kept values are scaled by 1 / (1 − rate).
#[test]
fn dropout_trains_like_its_twin_and_is_the_identity_in_inference() {
    use clampnet::layers::{Conv2d, Dense, Dropout, Flatten, MaxPool2d};
    use clampnet::model::{Activation, ModelSpec, Padding};
    let (ctx, _g) = gpu();
    let mut rng = TestRng::new(23);
    let spec = ModelSpec::new(
        [9, 8, 3],
        vec![
            Conv2d::new(5, 3, Padding::Same, Activation::Relu).into(),
            Dropout::new(0.4, None).unwrap().into(),
            MaxPool2d::new(2).into(),
            Flatten::new().into(),
            Dense::new(11, Activation::Relu).into(),
            Dropout::new(0.25, Some(1234)).unwrap().into(),
            Dense::new(4, Activation::Softmax).into(),
        ],
    );
    let plan = ModelPlan::new(&spec).unwrap();
    let (n_train, n_test, batch) = (13usize, 6usize, 5usize);
    let train = random_split(&mut rng, n_train, &plan);
    let test = random_split(&mut rng, n_test, &plan);
    let h = Settings::default();
    let seed = 9u64;
    let w0 = init_weights(&plan, 1);
    let mut setup = Setup::new(plan.clone(), Restrictions::default(), h, batch);
    setup.seed = seed;
    let mut t = Trainer::new(ctx, setup, &train, &test, &w0).unwrap();
    let w = assert_trains_like_twin(&mut t, &plan, &h, &train, (batch, 2), (seed, seed), &w0);
    // evaluation runs the model without dropout
    assert_evaluates_like_twin(&mut t, &plan, &w, &test);

    // the masks: kept fraction 1 - rate (deterministic draws; 6 sigma), kept values scaled exactly
    for rate in [0.0, 0.1, 0.5, 0.9] {
        let n = 200_000;
        let keep = r::dropout_mask(r::dropout_seed(seed, None), 3, 17, n, rate);
        let kept = keep.iter().filter(|&&k| k).count() as f64 / n as f64;
        let sigma = (rate * (1.0 - rate) / n as f64).sqrt();
        assert!(
            (kept - (1.0 - rate)).abs() <= 6.0 * sigma + 1e-12,
            "rate {rate}: kept {kept}"
        );
        let x = vec![0.37f64; 8];
        let y = r::dropout_apply(&x, &keep[..8], rate);
        for (v, k) in y.iter().zip(&keep) {
            assert_eq!(
                *v,
                if *k {
                    0.37 * r::dropout_scale(rate) as f64
                } else {
                    0.0
                }
            );
        }
    }
    assert_eq!(r::dropout_scale(0.5), 2.0);
    // different steps, layers and seeds draw different masks
    let m = |seed, salt, step| r::dropout_mask(seed, salt, step, 64, 0.5);
    assert_ne!(m(1, 0, 0), m(1, 0, 1));
    assert_ne!(m(1, 0, 0), m(1, 1, 0));
    assert_ne!(m(1, 0, 0), m(2, 0, 0));
}

/// Activations inside conv and dense layers (tanh, elu, sigmoid, leaky_relu: the layer's op, then an
/// elementwise op) and activation layers, through the whole trainer against the twin.
#[test]
fn layer_activations_train_like_their_twins() {
    use clampnet::layers::activation::{ActivationLayer, Func};
    use clampnet::layers::{Conv2d, Dense, Flatten, MaxPool2d};
    use clampnet::model::{Activation, ModelSpec, Padding};
    let (ctx, _g) = gpu();
    let mut rng = TestRng::new(24);
    let spec = ModelSpec::new(
        [9, 8, 1],
        vec![
            Conv2d::new(4, 3, Padding::Valid, Activation::Tanh).into(),
            MaxPool2d::new(2).into(),
            Flatten::new().into(),
            Dense::new(9, Activation::Elu).into(),
            Dense::new(7, Activation::LeakyRelu).into(),
            Dense::new(6, Activation::Sigmoid).into(),
            ActivationLayer::new(Func::Tanh).into(),
            Dense::new(3, Activation::Linear).into(),
            ActivationLayer::new(Func::Softmax).into(),
        ],
    );
    let plan = ModelPlan::new(&spec).unwrap();
    assert_eq!(plan.classes, 3);
    let (n_train, n_test, batch) = (11usize, 5usize, 4usize);
    let train = random_split(&mut rng, n_train, &plan);
    let test = random_split(&mut rng, n_test, &plan);
    let h = Settings {
        lr: 0.01,
        ..Settings::default()
    };
    let w0 = init_weights(&plan, 2);
    let mut t = plain_trainer(ctx, &plan, (h, batch), (&train, &test), &w0);
    assert_trains_like_twin(&mut t, &plan, &h, &train, (batch, 2), (3, 0), &w0);
}

/// A trainer of `plan` without restrictions, from `w0`.
fn plain_trainer<'a>(
    ctx: &'a clampnet::gpu::Context,
    plan: &ModelPlan,
    (h, batch): (Settings, usize),
    (train, test): (&Split, &Split),
    w0: &[Vec<f32>],
) -> Trainer<'a> {
    let setup = Setup::new(plan.clone(), Restrictions::default(), h, batch);
    Trainer::new(ctx, setup, train, test, w0).unwrap()
}

/// The trainer's evaluation equals the twin's inference forward with weights `w` (no dropout, a batch
/// norm's moving statistics).
fn assert_evaluates_like_twin(t: &mut Trainer, plan: &ModelPlan, w: &[Vec<f32>], test: &Split) {
    let e = t.evaluate().unwrap();
    let w64: Vec<Vec<f64>> = w
        .iter()
        .map(|t| t.iter().map(|&a| a as f64).collect())
        .collect();
    let x: Vec<f64> = test.images.iter().map(|&p| p as f64 / 255.0).collect();
    let (data_loss, _, _, _) = r::model_loss_grads(plan, &w64, &x, &test.labels);
    assert_close64("eval loss (inference)", &[e.loss], &[data_loss], 1e-5, 1e-4);
}

/// `epochs` shuffled epochs (order seed `seeds.0`) of `t` and of the twin (the run's seed `seeds.1`,
/// for dropout masks) from `w0`, no restrictions: after each, the train loss and every weight agree.
/// Returns the twin's weights.
fn assert_trains_like_twin(
    t: &mut Trainer,
    plan: &ModelPlan,
    h: &Settings,
    train: &Split,
    (batch, epochs): (usize, usize),
    (order_seed, seed): (u64, u64),
    w0: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    let n_train = train.len();
    let mut w = w0.to_vec();
    let sizes: Vec<usize> = w.iter().map(|t| t.len()).collect();
    let mut slots = r::zero_slots(h, &sizes);
    let mut step = 0u64;
    for epoch in 1..=epochs {
        let order = epoch_order(n_train, order_seed, epoch, true);
        let stats = t.train_epoch(epoch, &order, &mut |_| {}).unwrap();
        let mut loss_sum = 0.0;
        for b in 0..n_train.div_ceil(batch) {
            let rows = batch.min(n_train - b * batch);
            let (x, y) = r::gather_batch(
                &train.images,
                &train.labels,
                &order,
                b,
                batch,
                rows,
                plan.input_len(),
            );
            step += 1;
            let loss = (h, &Default::default());
            loss_sum += r::reference_step(
                plan,
                &Restrictions::default(),
                loss,
                &mut w,
                &mut slots,
                (step, seed),
                &x,
                &y,
            ) * rows as f64;
        }
        assert_close64(
            &format!("epoch {epoch} loss"),
            &[stats.train.loss],
            &[loss_sum / n_train as f64],
            1e-5,
            1e-4,
        );
        for (i, (name, _, got)) in t.weights().unwrap().into_iter().enumerate() {
            assert_close(&format!("epoch {epoch} {name}"), &got, &w[i], 2e-5, 1e-4);
        }
    }
    w
}

/// The layers of the CNNs people write through the whole trainer against the twin: a strided conv
/// without a bias, BatchNormalization on images and on features (moving statistics updated in each
/// training forward, never by Adam), average and max pools with strides and `same` padding, global
/// average pooling; then evaluation in inference (the moving statistics), and Adam's slots of the
/// moving statistics untouched.
#[test]
fn batch_norm_strides_and_pools_train_like_their_twins() {
    use clampnet::layers::activation::{ActivationLayer, Func};
    use clampnet::layers::{
        AveragePooling2d, BatchNormalization, Conv2d, Dense, GlobalAveragePooling2d, MaxPool2d,
    };
    use clampnet::model::{Activation, ModelSpec, Padding};
    let (ctx, _g) = gpu();
    let mut rng = TestRng::new(25);
    let spec = ModelSpec::new(
        [11, 10, 3],
        vec![
            Conv2d::new(6, 3, Padding::Same, Activation::Linear)
                .strided(2)
                .without_bias()
                .into(),
            BatchNormalization::new().into(),
            ActivationLayer::new(Func::Relu).into(),
            MaxPool2d {
                pool_size: 3,
                strides: Some(1),
                padding: Padding::Same,
            }
            .into(),
            Conv2d::new(5, 2, Padding::Valid, Activation::Relu).into(),
            AveragePooling2d::new(2, None, Padding::Same).into(),
            GlobalAveragePooling2d::new().into(),
            // (no dense with a bias right before it: that bias has a zero gradient, which Adam turns
            // into noise of the size of the learning rate)
            BatchNormalization {
                momentum: 0.9,
                ..Default::default()
            }
            .into(),
            Dense::new(3, Activation::Softmax).into(),
        ],
    );
    let plan = ModelPlan::new(&spec).unwrap();
    let (n_train, n_test, batch) = (13usize, 6usize, 5usize);
    let train = random_split(&mut rng, n_train, &plan);
    let test = random_split(&mut rng, n_test, &plan);
    let h = Settings {
        lr: 0.01,
        ..Settings::default()
    };
    let w0 = init_weights(&plan, 3);
    let mut t = plain_trainer(ctx, &plan, (h, batch), (&train, &test), &w0);
    let w = assert_trains_like_twin(&mut t, &plan, &h, &train, (batch, 2), (4, 0), &w0);
    // the moving statistics moved, and Adam never touched them (their slots stay 0)
    let mm = plan.param("batch_normalization.moving_mean").unwrap();
    assert!(
        w[plan.params.iter().position(|p| p.name == mm.name).unwrap()]
            .iter()
            .any(|&v| v != 0.0)
    );
    let (m, v) = t.optimizer_state().unwrap();
    for (i, p) in plan.params.iter().enumerate() {
        if !p.trainable {
            assert!(m[i].iter().chain(&v[i]).all(|&s| s == 0.0), "{}", p.name);
        }
    }
    // evaluation normalises with the moving statistics
    assert_evaluates_like_twin(&mut t, &plan, &w, &test);
}
