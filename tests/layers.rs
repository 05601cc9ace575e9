//! The conformance harness of the layer kinds (and fusions): every op, alone, on the GPU against its CPU
//! twin, in both kernel sets and both GATE variants where it has them; and every layer's twin against
//! central finite differences. The op runs through the same code the trainer records (`model::fuse`,
//! `layers::build_op`, the op's own forward and backward), on random data of odd sizes: not multiples
//! of the workgroup sizes or of the register tiles.
//!
//! A new layer kind adds a line to `cases()`.

mod common;

use clampnet::gpu::{Context, KernelSet, Pipelines, Recorder};
use clampnet::layers::activation::{ActivationLayer, Func};
use clampnet::layers::{
    build_op, AveragePooling2d, BatchNormalization, Build, Conv2d, Dense, Dropout, Flatten,
    GlobalAveragePooling2d, GlobalMaxPooling2d, Io, LayerSpec, MaxPool2d, TwinForward,
};

/// The training step every op and twin runs as: (optimizer steps done, the run's seed), for dropout.
const STEP: (u64, u64) = (5, 77);
use clampnet::model::{fuse, Activation, ModelPlan, ModelSpec, Padding};
use common::*;

/// A stack of layers that `model::fuse` runs as exactly one op, over `batches` batch sizes.
struct Case {
    what: &'static str,
    input: [usize; 3],
    layers: Vec<LayerSpec>,
    batches: &'static [usize],
    /// inputs from a small set of values, so that a max-pool sees ties
    ties: bool,
}

fn case(
    what: &'static str,
    input: [usize; 3],
    batches: &'static [usize],
    layers: Vec<LayerSpec>,
) -> Case {
    Case {
        what,
        input,
        layers,
        batches,
        ties: false,
    }
}

fn conv(filters: usize, k: usize, padding: Padding, activation: Activation) -> LayerSpec {
    Conv2d::new(filters, k, padding, activation).into()
}

fn pool(k: usize) -> LayerSpec {
    MaxPool2d::new(k).into()
}

#[derive(Clone, Copy)]
enum PoolKind {
    Max,
    Avg,
}

/// A max or average pool with a stride (None: the window) and padding.
fn pooling(kind: PoolKind, k: usize, strides: Option<usize>, padding: Padding) -> LayerSpec {
    match kind {
        PoolKind::Max => MaxPool2d {
            pool_size: k,
            strides,
            padding,
        }
        .into(),
        PoolKind::Avg => AveragePooling2d::new(k, strides, padding).into(),
    }
}

/// A dense layer over a flat input of `n` (the input is [1, n, 1], flattened: a view, no op).
fn dense(n: usize, units: usize, activation: Activation) -> ([usize; 3], Vec<LayerSpec>) {
    (
        [1, n, 1],
        vec![Flatten::new().into(), Dense::new(units, activation).into()],
    )
}

/// One line per layer kind and shape that matters.
fn cases() -> Vec<Case> {
    use Activation::*;
    use Padding::*;
    use PoolKind::*;
    let act = |f: Func, alpha: Option<f32>| -> LayerSpec {
        let mut a = ActivationLayer::new(f);
        a.alpha = alpha;
        a.into()
    };
    let mut c = vec![
        case(
            "activation relu",
            [3, 5, 2],
            &[1, 7],
            vec![act(Func::Relu, None)],
        ),
        case(
            "activation linear",
            [1, 9, 1],
            &[2],
            vec![act(Func::Linear, None)],
        ),
        case(
            "activation tanh",
            [4, 4, 3],
            &[3, 33],
            vec![act(Func::Tanh, None)],
        ),
        case(
            "activation sigmoid",
            [2, 7, 1],
            &[5],
            vec![act(Func::Sigmoid, None)],
        ),
        case(
            "activation elu 0.7",
            [3, 3, 3],
            &[4],
            vec![act(Func::Elu, Some(0.7))],
        ),
        case(
            "activation leaky_relu 0.3",
            [5, 2, 1],
            &[6, 65],
            vec![act(Func::LeakyRelu, Some(0.3))],
        ),
        case(
            "dropout 0.3 on an image",
            [5, 7, 3],
            &[1, 4, 33],
            vec![Dropout::new(0.3, None).unwrap().into()],
        ),
        case(
            "dropout 0.5 with its own seed, flat",
            [1, 70, 1],
            &[3, 17],
            vec![
                Flatten::new().into(),
                Dropout::new(0.5, Some(12)).unwrap().into(),
            ],
        ),
        case(
            "batch_normalization on an image",
            [5, 7, 3],
            &[1, 4, 33],
            vec![BatchNormalization::new().into()],
        ),
        case(
            "batch_normalization on flat features, momentum 0.9, epsilon 0.01",
            [1, 70, 1],
            &[3, 17],
            vec![
                Flatten::new().into(),
                BatchNormalization {
                    momentum: 0.9,
                    epsilon: 0.01,
                    ..Default::default()
                }
                .into(),
            ],
        ),
        case(
            "batch_normalization without gamma (scale = false)",
            [4, 4, 9],
            &[2],
            vec![BatchNormalization {
                scale: false,
                ..Default::default()
            }
            .into()],
        ),
        case(
            "batch_normalization without beta (center = false)",
            [3, 5, 65],
            &[2],
            vec![BatchNormalization {
                center: false,
                ..Default::default()
            }
            .into()],
        ),
        case(
            "dropout 0 (the identity)",
            [3, 3, 2],
            &[2],
            vec![Dropout::new(0.0, None).unwrap().into()],
        ),
        case(
            "conv2d, the reference layer",
            [28, 28, 1],
            &[3],
            vec![conv(32, 3, Valid, Relu)],
        ),
        case(
            "conv2d, RGB, same padding, 5 filters",
            [9, 7, 3],
            &[2],
            vec![conv(5, 3, Same, Relu)],
        ),
        case(
            "conv2d, even kernel, linear, 11 filters",
            [6, 5, 4],
            &[3],
            vec![conv(11, 2, Valid, Linear)],
        ),
        case(
            "conv2d, 5x5 same",
            [5, 9, 2],
            &[1],
            vec![conv(9, 5, Same, Relu)],
        ),
        case(
            "conv2d stride 2, valid, odd rows",
            [9, 8, 3],
            &[1, 3],
            vec![Conv2d::new(6, 3, Valid, Relu).strided(2).into()],
        ),
        case(
            "conv2d stride 2, same (TF: the extra zero row below)",
            [8, 7, 2],
            &[2],
            vec![Conv2d::new(5, 3, Same, Relu).strided(2).into()],
        ),
        case(
            "conv2d stride 3, 4x4 same, no bias",
            [10, 11, 1],
            &[2],
            vec![Conv2d::new(4, 4, Same, Linear)
                .strided(3)
                .without_bias()
                .into()],
        ),
        case(
            "conv2d even kernel, same (extra column right), no bias",
            [5, 6, 2],
            &[3],
            vec![Conv2d::new(7, 2, Same, Relu).without_bias().into()],
        ),
        case(
            "conv2d + relu + 2x2 max-pool, no bias",
            [8, 9, 2],
            &[2],
            vec![
                Conv2d::new(6, 3, Valid, Relu).without_bias().into(),
                pool(2),
            ],
        ),
        case(
            "conv2d, 21 input channels (two channel groups in the input gradient)",
            [5, 6, 21],
            &[2],
            vec![conv(7, 3, Same, Relu)],
        ),
        case(
            "conv2d + relu + 2x2 max-pool, 19 input channels",
            [6, 7, 19],
            &[2],
            vec![conv(5, 3, Valid, Relu), pool(2)],
        ),
        case(
            "conv2d, 1x1 kernel, one filter",
            [7, 7, 1],
            &[2],
            vec![conv(1, 1, Valid, Relu)],
        ),
        case(
            "conv2d + relu + 2x2 max-pool, the reference",
            [28, 28, 1],
            &[3, 19],
            vec![conv(32, 3, Valid, Relu), pool(2)],
        ),
        case(
            "conv2d + relu + 2x2 max-pool, RGB same, odd rows",
            [9, 8, 3],
            &[2],
            vec![conv(5, 3, Same, Relu), pool(2)],
        ),
        case(
            // the channel-quad stores (OC % 4 == 0) with a partial 16-channel group, odd pooled rows
            "conv2d + relu + 2x2 max-pool, 20 filters, same, odd size",
            [11, 9, 2],
            &[1, 3],
            vec![conv(20, 3, Same, Relu), pool(2)],
        ),
        case(
            // the straight-line 3x3 one-channel forward, 8 filters (half a 16-channel group), odd pooled rows
            "conv2d + relu + 2x2 max-pool, 3x3 over one channel, 8 filters",
            [11, 12, 1],
            &[1, 2],
            vec![conv(8, 3, Valid, Relu), pool(2)],
        ),
        case(
            // two 16-channel groups per invocation (the second partial), then one alone: 40 filters
            "conv2d + relu + 2x2 max-pool, 3x3 over one channel, 40 filters",
            [9, 12, 1],
            &[2],
            vec![conv(40, 3, Valid, Relu), pool(2)],
        ),
        case(
            "conv2d + relu + 2x2 max-pool, 3x3 over one channel, 24 filters",
            [10, 8, 1],
            &[3],
            vec![conv(24, 3, Valid, Relu), pool(2)],
        ),
        case(
            "conv2d + relu + 2x2 max-pool, even kernel",
            [7, 7, 2],
            &[2, 5],
            vec![conv(11, 2, Valid, Relu), pool(2)],
        ),
        Case {
            ties: true,
            ..case(
                "max_pool2d 2x2, the reference's",
                [26, 26, 32],
                &[3],
                vec![pool(2)],
            )
        },
        Case {
            ties: true,
            ..case(
                "max_pool2d 2x2, leftover rows and columns",
                [7, 9, 3],
                &[2],
                vec![pool(2)],
            )
        },
        Case {
            ties: true,
            ..case("max_pool2d 3x3", [10, 11, 5], &[1], vec![pool(3)])
        },
        Case {
            ties: true,
            ..case("max_pool2d 4x4, one window", [4, 4, 1], &[2], vec![pool(4)])
        },
        Case {
            ties: true,
            ..case(
                "max_pool2d 3x3 stride 1 (overlapping windows)",
                [6, 7, 3],
                &[2],
                vec![pooling(Max, 3, Some(1), Valid)],
            )
        },
        Case {
            ties: true,
            ..case(
                "max_pool2d 3x3 stride 2, same (TF: no padding above, one below)",
                [7, 8, 2],
                &[1, 3],
                vec![pooling(Max, 3, Some(2), Same)],
            )
        },
        case(
            "average_pooling2d 2x2, leftover rows",
            [7, 6, 3],
            &[2, 5],
            vec![pooling(Avg, 2, None, Valid)],
        ),
        case(
            "average_pooling2d 3x3 stride 2, same (divides by the cells inside)",
            [8, 7, 2],
            &[3],
            vec![pooling(Avg, 3, Some(2), Same)],
        ),
        case(
            "average_pooling2d 2x2 stride 1, same (the extra row and column)",
            [5, 5, 1],
            &[2],
            vec![pooling(Avg, 2, Some(1), Same)],
        ),
        case(
            "global_average_pooling2d",
            [6, 5, 7],
            &[1, 9],
            vec![GlobalAveragePooling2d::new().into()],
        ),
        case(
            "global_average_pooling2d, keepdims",
            [3, 3, 2],
            &[2],
            vec![GlobalAveragePooling2d { keepdims: true }.into()],
        ),
        Case {
            ties: true,
            ..case(
                "global_max_pooling2d",
                [5, 6, 4],
                &[2, 3],
                vec![GlobalMaxPooling2d::new().into()],
            )
        },
    ];
    for (what, batches, n, units, act) in [
        (
            "dense, the reference's (logits)",
            &[5usize][..],
            5408,
            10,
            Softmax,
        ),
        (
            "dense relu, 19 outputs (two passes of 16)",
            &[13][..],
            37,
            19,
            Relu,
        ),
        ("dense relu, 1 output", &[1][..], 3, 1, Relu),
        ("dense relu, 67 rows", &[67][..], 129, 8, Relu),
        // the quad forward (IN % 4 == 0, at least QUAD_FORWARD_MIN_ROWS rows), two output groups
        (
            "dense relu, 68 inputs x 70 rows, 21 outputs",
            &[70][..],
            68,
            21,
            Relu,
        ),
        // the variants without the tile's fourth output quad (OUT <= 12) on the quad forward, and the
        // first output count that needs it
        (
            "dense relu, 68 inputs x 70 rows, 11 outputs",
            &[70][..],
            68,
            11,
            Relu,
        ),
        ("dense linear, 13 outputs", &[9][..], 12, 13, Linear),
        // 8 input rows (columns) per invocation of the gradients (IN % 8 == 0), narrow and wide tiles,
        // and past 16 outputs (the input gradient then in passes of 16)
        ("dense relu, 72 inputs, 13 outputs", &[9][..], 72, 13, Relu),
        (
            "dense relu, 136 inputs, 10 outputs",
            &[7][..],
            136,
            10,
            Relu,
        ),
        (
            "dense linear, 24 inputs, 19 outputs",
            &[6][..],
            24,
            19,
            Linear,
        ),
        (
            "dense linear, 40 outputs (three passes)",
            &[5][..],
            11,
            40,
            Linear,
        ),
    ] {
        let (input, layers) = dense(n, units, act);
        c.push(case(what, input, batches, layers));
    }
    c
}

fn rand_vec(rng: &mut TestRng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| rng.sym(a)).collect()
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// What an op computed: its output, its parameter gradients (weight order) and dL/dx.
struct Outputs {
    y: Vec<f64>,
    grads: Vec<Vec<f64>>,
    dx: Vec<f64>,
    /// the non-trainable tensors after the training forward (moving statistics), in parameter order
    state: Vec<Vec<f64>>,
}

/// Run the op of `plan` (`gate`: its GATE variant) forward and backward on the GPU.
#[allow(clippy::too_many_arguments)]
fn run_gpu(
    ctx: &Context,
    pipes: &Pipelines,
    plan: &ModelPlan,
    set: KernelSet,
    (gate, needs_dx): (bool, bool),
    batch: usize,
    (x, w, dy): (&[f32], &[Vec<f32>], &[f32]),
) -> Outputs {
    let ops = fuse::lower(plan, set, true);
    assert_eq!(ops.len(), 1, "one op");
    let mut op_plan = ops[0].clone();
    op_plan.gate = gate;
    op_plan.needs_dx = needs_dx;
    let b = Build {
        ctx,
        set,
        batch,
        training: true,
        seeds: vec![STEP.1],
    };
    let op = build_op(plan, &op_plan, &b).unwrap();
    let flat = clampnet::step::flatten_weights(plan, w).unwrap();
    let params = ctx.storage_uniform_init("params", bytemuck::cast_slice(&flat));
    let grads = ctx.storage_zeroed("grads", (plan.flat_len * 4) as u64);
    let xb = ctx.storage_init("x", bytemuck::cast_slice(x));
    let dx = ctx.storage_zeroed("dx", (x.len() * 4) as u64);
    ctx.write(op.out().dy(), 0, dy);
    let state = ctx.storage_init("state", bytemuck::cast_slice(&[STEP.0 as u32, 0u32]));
    let io = Io {
        x: &xb,
        dx: needs_dx.then_some(&dx),
        params: &params,
        grads: Some(&grads),
        state: Some(&state),
    };
    let mut r = Recorder::new(ctx, pipes);
    op.forward(&mut r, &io, batch);
    op.backward(&mut r, &io, batch);
    let dispatches = r.finish().unwrap();
    ctx.submit(&dispatches, None);
    let read = |buf, offset: usize, len: usize| {
        to64(&ctx.read_f32(buf, offset as u64, len as u64).unwrap())
    };
    Outputs {
        y: read(&op.out().y, 0, batch * op_plan.output.len()),
        grads: plan
            .params
            .iter()
            .map(|p| read(&grads, p.offset, p.len))
            .collect(),
        dx: read(&dx, 0, x.len()),
        state: plan
            .params
            .iter()
            .filter(|p| !p.trainable)
            .map(|p| read(&params, p.offset, p.len))
            .collect(),
    }
}

/// The twin of the same layers: forward through each, backward from `dy` through each.
fn run_twin(plan: &ModelPlan, batch: usize, x: &[f64], w: &[Vec<f64>], dy: &[f64]) -> Outputs {
    let ws = |i: usize| -> Vec<&[f64]> {
        plan.layers[i]
            .params
            .iter()
            .map(|&p| w[p].as_slice())
            .collect()
    };
    let mut acts = vec![x.to_vec()];
    let mut fwds: Vec<TwinForward> = Vec::new();
    for (i, l) in plan.layers.iter().enumerate() {
        let f = l
            .spec
            .kind()
            .twin_forward_train(l, batch, &acts[i], &ws(i), STEP);
        acts.push(f.y.clone());
        fwds.push(f);
    }
    let mut grads: Vec<Vec<f64>> = plan.params.iter().map(|p| vec![0.0; p.len]).collect();
    let mut d = dy.to_vec();
    for (i, l) in plan.layers.iter().enumerate().rev() {
        let (dw, dx) = l
            .spec
            .kind()
            .twin_backward(l, batch, &acts[i], &ws(i), &fwds[i], &d);
        for (&p, g) in l.params.iter().zip(dw) {
            grads[p] = g;
        }
        d = dx;
    }
    let mut after: Vec<Vec<f64>> = w.to_vec();
    let fwd = clampnet::reference::Forward { layers: fwds };
    for (p, v) in clampnet::reference::state_updates(plan, &fwd) {
        after[p] = v;
    }
    Outputs {
        y: acts.pop().unwrap(),
        grads,
        dx: d,
        state: plan
            .params
            .iter()
            .zip(after)
            .filter(|(p, _)| !p.trainable)
            .map(|(_, v)| v)
            .collect(),
    }
}

#[test]
fn every_op_matches_its_twin_in_both_kernel_sets_and_gate_variants() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx, &clampnet::step::kernels()).unwrap();
    let mut rng = TestRng::new(31);
    for c in cases() {
        let plan = ModelPlan::partial(&ModelSpec {
            input: c.input,
            layers: c.layers.clone(),
            names: Vec::new(),
        })
        .unwrap();
        let kind = plan.layers.last().unwrap().spec.kind();
        for &batch in c.batches {
            let x: Vec<f32> = (0..batch * plan.input_len())
                .map(|_| {
                    if c.ties {
                        (rng.next_u32() % 7) as f32 * 0.5 - 1.5
                    } else {
                        rng.sym(1.0)
                    }
                })
                .collect();
            let w: Vec<Vec<f32>> = plan
                .params
                .iter()
                .map(|p| rand_vec(&mut rng, p.len, 0.5))
                .collect();
            let w64: Vec<Vec<f64>> = w.iter().map(|t| to64(t)).collect();
            let out_len = plan.layers.last().unwrap().output.len();
            let dy = rand_vec(&mut rng, batch * out_len, 1.0);
            let twin = run_twin(&plan, batch, &to64(&x), &w64, &to64(&dy));
            for set in [KernelSet::Cpu, KernelSet::Gpu] {
                let op = &fuse::lower(&plan, set, true)[0];
                // an op that owns relu' runs in both variants: applying it, or given a gated gradient
                let gates: &[bool] = if op.fusion.is_none() && (kind.relu() || kind.gates_input()) {
                    &[true, false]
                } else {
                    &[false]
                };
                for &gate in gates {
                    let what = format!("{} (batch {batch}, {set:?} set, GATE {gate})", c.what);
                    let mut dy_in = dy.clone();
                    let mut want_dx = twin.dx.clone();
                    if kind.relu() && !gate {
                        // the gradient arrives gated: relu' is idempotent, so the twin's results hold
                        for (g, &y) in dy_in.iter_mut().zip(&twin.y) {
                            if y <= 0.0 {
                                *g = 0.0;
                            }
                        }
                    }
                    if kind.gates_input() && gate {
                        // relu' of the layer before: no gradient where the input is not positive
                        for (g, &v) in want_dx.iter_mut().zip(&x) {
                            if v <= 0.0 {
                                *g = 0.0;
                            }
                        }
                    }
                    // the CPU set also as a first layer (no gradient to its input: the 3x3
                    // one-channel conv then keeps the pool's choices packed)
                    let mut runs = vec![(
                        true,
                        run_gpu(
                            ctx,
                            &pipes,
                            &plan,
                            set,
                            (gate, true),
                            batch,
                            (&x, &w, &dy_in),
                        ),
                    )];
                    if set == KernelSet::Cpu {
                        runs.push((
                            false,
                            run_gpu(
                                ctx,
                                &pipes,
                                &plan,
                                set,
                                (gate, false),
                                batch,
                                (&x, &w, &dy_in),
                            ),
                        ));
                    }
                    for (needs_dx, got) in runs {
                        let what = format!("{what}, gradient to the input: {needs_dx}");
                        // a max-pool moves values: exact, but overlapping windows add their gradients in
                        // f32; dropout scales in f32; averages and sums of products: f32 accumulation
                        let tol = match (plan.params.is_empty(), kind.keras_class()) {
                            (_, "Dropout") => 1e-7,
                            (true, "MaxPooling2D") => 1e-7,
                            (true, "AveragePooling2D" | "GlobalAveragePooling2D") => 1e-6,
                            // f32 exp and tanh against f64
                            (_, "Activation" | "ELU" | "LeakyReLU" | "ReLU") => 3e-6,
                            (true, _) => 0.0,
                            (false, _) => 1e-5,
                        };
                        assert_close64(&format!("{what} y"), &got.y, &twin.y, tol, tol);
                        for (p, (g, t)) in plan.params.iter().zip(got.grads.iter().zip(&twin.grads))
                        {
                            assert_close64(&format!("{what} d{}", p.name), g, t, tol, tol);
                        }
                        if needs_dx {
                            assert_close64(&format!("{what} dx"), &got.dx, &want_dx, tol, tol);
                        }
                        for (i, (g, t)) in got.state.iter().zip(&twin.state).enumerate() {
                            assert_close64(&format!("{what} state {i}"), g, t, tol, tol);
                        }
                    }
                }
            }
        }
    }
}

/// The opt-in subgroup path (`--subgroups`): the GPU set's dense forward summing across invocations with
/// subgroupAdd matches the twin on every dense case (lavapipe has the feature: 8-wide subgroups, so 32
/// of them per workgroup). Skipped, saying so, on an adapter without subgroups (the GL pass).
#[test]
fn dense_with_subgroups_matches_its_twin() {
    let (ctx, _g) = gpu_subgroups();
    if !ctx.subgroups {
        eprintln!("skipped: {} has no subgroup feature", ctx.info.name);
        return;
    }
    let pipes = Pipelines::new(ctx, &clampnet::step::kernels()).unwrap();
    let mut rng = TestRng::new(37);
    let mut checked = 0;
    for c in cases() {
        let plan = ModelPlan::partial(&ModelSpec {
            input: c.input,
            layers: c.layers.clone(),
            names: Vec::new(),
        })
        .unwrap();
        let kind = plan.layers.last().unwrap().spec.kind();
        if kind.keras_class() != "Dense" {
            continue;
        }
        for &batch in c.batches {
            let x = rand_vec(&mut rng, batch * plan.input_len(), 1.0);
            let w: Vec<Vec<f32>> = plan
                .params
                .iter()
                .map(|p| rand_vec(&mut rng, p.len, 0.5))
                .collect();
            let w64: Vec<Vec<f64>> = w.iter().map(|t| to64(t)).collect();
            let dy = rand_vec(
                &mut rng,
                batch * plan.layers.last().unwrap().output.len(),
                1.0,
            );
            let twin = run_twin(&plan, batch, &to64(&x), &w64, &to64(&dy));
            let got = run_gpu(
                ctx,
                &pipes,
                &plan,
                KernelSet::Gpu,
                // the op applies relu' itself (GATE) where it has relu, as the twin does
                (kind.relu(), true),
                batch,
                (&x, &w, &dy),
            );
            let what = format!("{} (batch {batch}, subgroups)", c.what);
            assert_close64(&format!("{what} y"), &got.y, &twin.y, 1e-5, 1e-5);
            for (p, (g, t)) in plan.params.iter().zip(got.grads.iter().zip(&twin.grads)) {
                assert_close64(&format!("{what} d{}", p.name), g, t, 1e-5, 1e-5);
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "dense cases: {checked}");
}

#[test]
fn every_layer_twin_matches_finite_differences() {
    let mut rng = TestRng::new(32);
    for c in cases() {
        let plan = ModelPlan::partial(&ModelSpec {
            input: c.input,
            layers: c.layers.clone(),
            names: Vec::new(),
        })
        .unwrap();
        let batch = 2;
        let mut x: Vec<f64> = (0..batch * plan.input_len())
            .map(|_| rng.sym(1.0) as f64)
            .collect();
        let mut w: Vec<Vec<f64>> = plan
            .params
            .iter()
            .map(|p| (0..p.len).map(|_| rng.sym(0.5) as f64).collect())
            .collect();
        let out_len = plan.layers.last().unwrap().output.len();
        let dy: Vec<f64> = (0..batch * out_len).map(|_| rng.sym(1.0) as f64).collect();
        // L = sum(dy * y): its gradients are what the backward computes from dy
        let loss = |x: &[f64], w: &[Vec<f64>]| -> f64 {
            run_twin(&plan, batch, x, w, &dy)
                .y
                .iter()
                .zip(&dy)
                .map(|(a, b)| a * b)
                .sum()
        };
        let twin = run_twin(&plan, batch, &x, &w, &dy);
        let h = 1e-6;
        let check = |what: &str, analytic: f64, numeric: f64| {
            // relu and max-pool kinks are measure-zero for random data; 1e-6 covers f64 rounding
            assert!(
                (numeric - analytic).abs() <= 1e-6 + 1e-5 * numeric.abs(),
                "{} {what}: analytic {analytic} numeric {numeric}",
                c.what
            );
        };
        for t in 0..w.len() {
            let step = (w[t].len() / 40).max(1);
            for i in (0..w[t].len()).step_by(step) {
                let orig = w[t][i];
                w[t][i] = orig + h;
                let up = loss(&x, &w);
                w[t][i] = orig - h;
                let down = loss(&x, &w);
                w[t][i] = orig;
                check(
                    &format!("{}[{i}]", plan.params[t].name),
                    twin.grads[t][i],
                    (up - down) / (2.0 * h),
                );
            }
        }
        let step = (x.len() / 40).max(1);
        for i in (0..x.len()).step_by(step) {
            let orig = x[i];
            x[i] = orig + h;
            let up = loss(&x, &w);
            x[i] = orig - h;
            let down = loss(&x, &w);
            x[i] = orig;
            check(&format!("dx[{i}]"), twin.dx[i], (up - down) / (2.0 * h));
        }
    }
}
