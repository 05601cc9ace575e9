//! K models in one set of dispatches (`Step::new_many`, `gpu::batched`, `group::Group`): each model of
//! a K-model step, trained with its own restrictions (every kind), learning rate, seed and epoch order,
//! ends bit for bit where the same run on its own ends: weights, optimizer state, every epoch's
//! metrics, test metrics. Odd models (one with dropout, its masks per seed), odd K, a short last
//! batch, both kernel sets, fused and unfused.

mod common;

use std::sync::Arc;

use clampnet::data::Split;
use clampnet::gpu::{Context, KernelSet};
use clampnet::group::Group;
use clampnet::model::{init_weights, ModelPlan};
use clampnet::restrict::{Constraint, Restrictions};
use clampnet::trainer::{epoch_order, Setup, Trainer};
use common::*;

/// Synthetic images of `spec`'s input, odd in number.
fn data(input: [usize; 3], n: usize, classes: usize, seed: u64) -> Split {
    let mut rng = TestRng::new(seed);
    let [h, w, c] = input;
    Split {
        images: (0..n * h * w * c)
            .map(|_| (rng.next_u32() % 256) as u8)
            .collect(),
        labels: (0..n).map(|_| rng.next_u32() % classes as u32).collect(),
        height: h,
        width: w,
        channels: c,
    }
}

/// `r` with every value scaled by `f` (same kinds, other strengths).
fn scaled(r: &Restrictions, f: f32) -> Restrictions {
    let mut r = r.clone();
    for (_, t) in r.tensors.iter_mut() {
        if let Some(reg) = &mut t.regularizer {
            reg.l1 *= f;
            reg.l2 *= f;
        }
        for c in t
            .constraints
            .iter_mut()
            .chain(t.epoch_constraints.iter_mut())
        {
            match c {
                Constraint::ClipByValue { lo, hi } => {
                    *lo *= f;
                    *hi *= f;
                }
                Constraint::MaxNorm { max_value, .. } => *max_value *= f,
                Constraint::MinMaxNorm {
                    min_value,
                    max_value,
                    ..
                } => {
                    *min_value *= f;
                    *max_value *= f;
                }
                _ => {}
            }
        }
    }
    r
}

/// `r` without the per-step constraints of its first tensor and the per-epoch ones of its second.
fn without_some_constraints(r: &Restrictions) -> Restrictions {
    let mut r = r.clone();
    if let Some((_, t)) = r.tensors.get_mut(0) {
        t.constraints.clear();
    }
    if let Some((_, t)) = r.tensors.get_mut(1) {
        t.epoch_constraints.clear();
    }
    r
}

/// What a run ends with: weights, optimizer slots, per-epoch train metrics, test metrics.
type Outcome = (
    Vec<Vec<f32>>,
    Vec<Vec<Vec<f32>>>,
    Vec<(f64, f64)>,
    (f64, f64),
);

struct Run {
    restrictions: Restrictions,
    lr: f32,
    seed: u64,
}

fn train(
    ctx: &Context,
    plan: &ModelPlan,
    (set, fuse, batch): (KernelSet, bool, usize),
    run: &Run,
    (train, test): (&Split, &Split),
    group: Option<(Arc<Group>, usize)>,
) -> (Outcome, usize) {
    let opt = clampnet::optim::Settings {
        lr: run.lr,
        ..Default::default()
    };
    let mut setup = Setup::new(plan.clone(), run.restrictions.clone(), opt, batch);
    setup.kernel_set = Some(set);
    setup.fuse = fuse;
    setup.seed = run.seed;
    setup.group = group;
    let weights = init_weights(plan, run.seed);
    let mut t = Trainer::new(ctx, setup, train, test, &weights).unwrap();
    let mut epochs = Vec::new();
    for epoch in 0..2 {
        let order = epoch_order(train.len(), run.seed, epoch, true);
        let s = t.train_epoch(epoch, &order, &mut |_| {}).unwrap();
        epochs.push((s.train.loss, s.train.accuracy));
    }
    let e = t.evaluate().unwrap();
    let w = t
        .weights()
        .unwrap()
        .into_iter()
        .map(|(_, _, v)| v)
        .collect();
    let slots = t
        .optimizer_slots()
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    (
        (w, slots, epochs, (e.loss, e.accuracy)),
        t.models_per_pass(),
    )
}

/// The odd models, one with dropout (its masks follow each run's own seed), and one whose first layer
/// takes the CPU set's 3x3 one-channel shapes (a 12-wide input, 8 filters: the K-model step's forward
/// is the channel-quad kernel, a solo run's the straight-line one; both are bit-identical).
fn models() -> Vec<clampnet::model::ModelSpec> {
    use clampnet::layers::{Conv2d, Dense, Dropout, Flatten, MaxPool2d};
    use clampnet::model::{Activation, ModelSpec, Padding};
    let mut m = odd_models();
    m.push(ModelSpec {
        input: [11, 12, 1],
        layers: vec![
            Conv2d::new(8, 3, Padding::Valid, Activation::Relu).into(),
            MaxPool2d::new(2).into(),
            Flatten::new().into(),
            Dense::new(3, Activation::Softmax).into(),
        ],
        names: Vec::new(),
    });
    m.push(ModelSpec {
        input: [8, 7, 1],
        layers: vec![
            Conv2d::new(4, 3, Padding::Valid, Activation::Relu).into(),
            Dropout::new(0.4, None).unwrap().into(),
            Flatten::new().into(),
            Dense::new(3, Activation::Softmax).into(),
        ],
        names: Vec::new(),
    });
    m
}

fn check(set: KernelSet, fuse: bool) {
    check_on(gpu, set, fuse)
}

/// `check` on the context `gpu_ctx` gives (the opt-in GPU paths have their own).
fn check_on(
    gpu_ctx: fn() -> (&'static Context, std::sync::MutexGuard<'static, ()>),
    set: KernelSet,
    fuse: bool,
) {
    let (ctx, _g) = gpu_ctx();
    for (i, spec) in models().iter().enumerate() {
        let plan = ModelPlan::new(spec).unwrap();
        let every = every_restriction(&plan);
        let runs = [
            Run {
                restrictions: every.clone(),
                lr: 1e-3,
                seed: 1,
            },
            Run {
                restrictions: scaled(&every, 1.7),
                lr: 3e-3,
                seed: 2,
            },
            Run {
                // no penalty anywhere, and some tensors without their constraints: the passes on
                // them leave this model alone
                restrictions: without_some_constraints(&scaled(&every, 0.0)),
                lr: 5e-4,
                seed: 3,
            },
        ];
        let train_set = data(spec.input, 23, plan.classes, 10 + i as u64);
        let test_set = data(spec.input, 11, plan.classes, 20 + i as u64);
        let how = (set, fuse, 5);
        let solo: Vec<Outcome> = runs
            .iter()
            .map(|r| train(ctx, &plan, how, r, (&train_set, &test_set), None).0)
            .collect();
        let group = Group::new(runs.len());
        let together: Vec<(Outcome, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = runs
                .iter()
                .enumerate()
                .map(|(m, r)| {
                    let g = group.clone();
                    let (tr, te, plan) = (&train_set, &test_set, &plan);
                    s.spawn(move || train(ctx, plan, how, r, (tr, te), Some((g, m))))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (m, ((t, k), s)) in together.iter().zip(&solo).enumerate() {
            let what = format!("{set:?} fuse {fuse}, model {i}, run {m}");
            assert_eq!(
                *k,
                runs.len(),
                "{what}: trained in one step with the others"
            );
            assert_eq!(t.0, s.0, "{what}: weights");
            assert_eq!(t.1, s.1, "{what}: optimizer slots");
            assert_eq!(t.2, s.2, "{what}: epoch metrics");
            assert_eq!(t.3, s.3, "{what}: test metrics");
        }
        // the runs differ, so the test is not vacuous
        assert_ne!(solo[0].0, solo[1].0);
    }
}

#[test]
fn k_models_equal_their_solo_runs_cpu_set() {
    check(KernelSet::Cpu, true);
}

#[test]
fn k_models_equal_their_solo_runs_gpu_set() {
    check(KernelSet::Gpu, true);
}

/// The opt-in GPU paths in K-model steps: the tiled kernels (`--gpu-tiles`), and the subgroup sums
/// (`--subgroups`, where the adapter has them) against their own solo runs.
#[test]
fn k_models_equal_their_solo_runs_with_the_opt_in_gpu_paths() {
    if gl_pass() {
        eprintln!("skipped on the GL pass (common::gl_pass)");
        return;
    }
    check_on(gpu_tiles, KernelSet::Gpu, true);
    if gpu_subgroups().0.subgroups {
        check_on(gpu_subgroups, KernelSet::Gpu, true);
    } else {
        eprintln!("subgroups skipped: the adapter has no subgroup feature");
    }
}

#[test]
fn k_models_equal_their_solo_runs_unfused() {
    check(KernelSet::Cpu, false);
}

/// A run of the group that fails (its loss goes non-finite) fails alone, as it does on its own; the
/// others train on to their solo results, and nobody waits for the one that left.
#[test]
fn a_failing_run_leaves_its_group_and_the_others_finish() {
    let (ctx, _g) = gpu();
    let spec = &odd_models()[0];
    let plan = ModelPlan::new(spec).unwrap();
    let train_set = data(spec.input, 23, plan.classes, 7);
    let test_set = data(spec.input, 11, plan.classes, 8);
    let runs: Vec<Run> = [1e-3, 1e30, 2e-3]
        .into_iter()
        .enumerate()
        .map(|(i, lr)| Run {
            restrictions: Restrictions::default(),
            lr,
            seed: i as u64,
        })
        .collect();
    let how = (KernelSet::Cpu, true, 5);
    let attempt = |r: &Run, group: Option<(Arc<Group>, usize)>| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            train(ctx, &plan, how, r, (&train_set, &test_set), group)
        }))
        .map(|(o, _)| o)
    };
    let solo: Vec<_> = runs.iter().map(|r| attempt(r, None)).collect();
    assert!(solo[1].is_err(), "the huge learning rate fails on its own");
    let group = Group::new(runs.len());
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .enumerate()
            .map(|(m, r)| {
                let g = group.clone();
                let attempt = &attempt;
                s.spawn(move || {
                    let out = attempt(r, Some((g.clone(), m)));
                    g.leave(m);
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        together[1].is_err(),
        "the failing run fails in the group too"
    );
    for m in [0, 2] {
        assert_eq!(
            together[m].as_ref().ok(),
            solo[m].as_ref().ok(),
            "run {m} equals its solo run"
        );
    }
}
