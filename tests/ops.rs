//! The ops of a step that are not layers, each through its own recording code against its CPU twin on
//! random data of odd sizes: the batch gather, softmax cross-entropy, the metrics accumulation, the
//! update (penalties, clipping, weight decay, Adam, proximal L1, regularization loss), the constraints
//! over Keras axes, and grids folded above 65,535 workgroups.

mod common;

use clampnet::data::Split;
use clampnet::gpu::{Buffer, Context, Dispatch, KernelSet, Pipelines, Recorder};
use clampnet::optim::constraints;
use clampnet::optim::prologue::{Prologue, Segment};
use clampnet::optim::{build_optimizer, GradClip, Method, Schedule, Settings, UpdateIo};
use clampnet::reference as r;
use clampnet::restrict::{Constraint, Regularizer};
use clampnet::step::gather::{byte_to_unit, Batch, GpuSplit, State};
use clampnet::step::loss::{Loss, LossParams, Metrics};
use common::*;

fn rand_vec(rng: &mut TestRng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| rng.sym(a)).collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn pipes(ctx: &Context) -> Pipelines {
    Pipelines::new(ctx, &clampnet::step::kernels()).unwrap()
}

/// Record with `f`, run, wait.
fn run(ctx: &Context, pipes: &Pipelines, f: impl FnOnce(&mut Recorder)) {
    let mut r = Recorder::new(ctx, pipes);
    f(&mut r);
    let plan: Vec<Dispatch> = r.finish().unwrap();
    ctx.submit(&plan, None);
    ctx.wait().unwrap();
}

fn read(ctx: &Context, b: &Buffer, n: usize) -> Vec<f32> {
    ctx.read_f32(b, 0, n as u64).unwrap()
}

#[test]
fn gather_matches_twin() {
    let (ctx, _g) = gpu();
    let pipes = pipes(ctx);
    let mut rng = TestRng::new(7);
    // 13: byte packing crosses u32 words (gather_batch); 12 and 44: a word per 4 pixels (GPU set:
    // gather_batch4; CPU set: gather_batch16, 4 words per invocation, the last group partial: 3 of 3
    // words, 3 of 11)
    for per_image in [13usize, 12, 44] {
        for set in [KernelSet::Cpu, KernelSet::Gpu] {
            gather_case(ctx, &pipes, &mut rng, per_image, set);
        }
    }
    assert_eq!(byte_to_unit()[51], 0.2, "the division table is IEEE's");
}

fn gather_case(
    ctx: &Context,
    pipes: &Pipelines,
    rng: &mut TestRng,
    per_image: usize,
    set: KernelSet,
) {
    let (n, full_batch) = (23usize, 5usize);
    let images: Vec<u8> = (0..n * per_image)
        .map(|_| (rng.next_u32() % 256) as u8)
        .collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.next_u32() % 10).collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.reverse();
    order.swap(3, 17);
    let split = Split {
        images: images.clone(),
        labels: labels.clone(),
        height: 1,
        width: per_image,
        channels: 1,
    };
    let data = GpuSplit::upload(ctx, &split, "test");
    ctx.write(&data.perm, 0, &order);
    let batch = Batch::new(ctx, set, full_batch, per_image).unwrap();
    for (batch_index, rows) in [(0usize, 5usize), (2, 5), (4, 3)] {
        data.begin(ctx, 0, batch_index);
        run(ctx, pipes, |r| batch.record(r, &data, rows, full_batch));
        let (x, y) = r::gather_batch(
            &images,
            &labels,
            &order,
            batch_index,
            full_batch,
            rows,
            per_image,
        );
        assert_eq!(
            read(ctx, &batch.x, rows * per_image),
            x,
            "gathered pixels (u8 / 255, exact), {per_image} per image, {set:?} set"
        );
        assert_eq!(
            ctx.read_u32(&batch.y, 0, rows as u64).unwrap(),
            y,
            "gathered labels"
        );
    }
}

#[test]
fn softmax_xent_matches_twin() {
    let (ctx, _g) = gpu();
    let pipes = pipes(ctx);
    let mut rng = TestRng::new(1);
    for (batch, classes, scale, smoothing) in [
        (7usize, 10usize, 3.0f32, 0.0f32),
        (5, 3, 30.0, 0.0),
        (67, 10, 12.0, 0.0),
        (9, 10, 3.0, 0.1),
        (5, 3, 30.0, 0.25),
    ] {
        let logits = rand_vec(&mut rng, batch * classes, scale);
        let labels: Vec<u32> = (0..batch)
            .map(|_| rng.next_u32() % classes as u32)
            .collect();
        let lb = ctx.storage_init("logits", bytemuck::cast_slice(&logits));
        let yb = ctx.storage_init("labels", bytemuck::cast_slice(&labels));
        let dl = ctx.storage_zeroed("dlogits", (batch * classes * 4) as u64);
        // class weights on the odd cases (a training step applies them; evaluation does not)
        let weights: Option<Vec<f32>> =
            (batch % 2 == 1).then(|| (0..classes).map(|k| 0.5 + k as f32 * 0.25).collect());
        let loss = Loss::weighted(ctx, batch, classes, smoothing, weights.as_deref());
        run(ctx, &pipes, |r| {
            loss.record_softmax_xent(r, (&lb, &yb, &dl), batch, true);
        });
        let ones = vec![1.0f32; classes];
        let (ce, want_dl, correct) = r::softmax_xent_weighted(
            batch,
            classes,
            &f64s(&logits),
            &labels,
            smoothing,
            weights.as_deref().unwrap_or(&ones),
        );
        let per = read(ctx, loss.per_example(), batch * 2);
        let ce_gpu: Vec<f64> = per.iter().step_by(2).map(|&v| v as f64).collect();
        let ok_gpu: Vec<f32> = per.iter().skip(1).step_by(2).copied().collect();
        // f32 logsumexp: a few ulp of the largest logit
        assert_close64("cross-entropy", &ce_gpu, &ce, 1e-6 * scale as f64, 1e-6);
        assert_close64(
            "dlogits",
            &f64s(&read(ctx, &dl, batch * classes)),
            &want_dl,
            1e-7,
            1e-5,
        );
        assert_eq!(
            ok_gpu,
            correct.iter().map(|&c| c as u8 as f32).collect::<Vec<_>>()
        );
    }
}

#[test]
fn accumulate_sums_metrics_and_advances_state() {
    let (ctx, _g) = gpu();
    let pipes = pipes(ctx);
    let split = Split {
        images: vec![0; 3],
        labels: vec![0; 3],
        height: 1,
        width: 1,
        channels: 1,
    };
    let data = GpuSplit::upload(ctx, &split, "test");
    let loss = Loss::new(ctx, 3, 10, 0.0);
    let reg = ctx.storage_init("reg", bytemuck::cast_slice(&[0.25f32]));
    let start = Metrics {
        loss_sum: 10.0,
        correct: 4.0,
        count: 8.0,
        nonfinite: 0,
    };
    for (advance, want_state) in [(3u32, (8u32, 3u32)), (2, (7, 3))] {
        ctx.write(loss.per_example(), 0, &[0.5f32, 1.0, 2.0, 0.0, 1.5, 1.0]); // (ce, correct) x 3
        ctx.write(&data.state, 0, &[State { step: 7, batch: 2 }]);
        ctx.write(&data.metrics, 0, &[start]);
        let p = LossParams {
            batch: 3,
            classes: 10,
            advance,
            label_smoothing: 0.0,
        };
        run(ctx, &pipes, |r| {
            let u = r.uniform("loss", &p);
            loss.record_accumulate(r, &u, &reg, &data);
        });
        let m: Metrics =
            bytemuck::pod_read_unaligned(&ctx.read_bytes(&data.metrics, 0, 16).unwrap());
        // mean ce = 4/3, plus reg 0.25, weighted by the batch of 3
        assert!(
            (m.loss_sum - (10.0 + (4.0 / 3.0 + 0.25) * 3.0)).abs() < 1e-5,
            "{m:?}"
        );
        assert_eq!((m.correct, m.count, m.nonfinite), (6.0, 11.0, 0));
        let s: State = bytemuck::pod_read_unaligned(&ctx.read_bytes(&data.state, 0, 8).unwrap());
        assert_eq!((s.step, s.batch), want_state);
    }
    // a NaN loss raises the flag
    ctx.write(loss.per_example(), 0, &[f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let p = LossParams {
        batch: 1,
        classes: 10,
        advance: 3,
        label_smoothing: 0.0,
    };
    run(ctx, &pipes, |r| {
        let u = r.uniform("loss", &p);
        loss.record_accumulate(r, &u, &reg, &data);
    });
    let m: Metrics = bytemuck::pod_read_unaligned(&ctx.read_bytes(&data.metrics, 0, 16).unwrap());
    assert_eq!(m.nonfinite, 1);
}

/// Every optimizer (Adam, AdamW, SGD plain / momentum / nesterov, RMSprop plain / momentum / centered),
/// with and without a learning-rate schedule, after the shared prologue (penalties, every clipping,
/// weight decay) and with the proximal L1 step where it is defined, against the twin on 4 tensors of
/// odd sizes with alignment padding between them.
#[test]
fn update_with_penalties_clipping_decay_and_proximal_l1_matches_twin() {
    let (ctx, _g) = gpu();
    let pipes = pipes(ctx);
    let mut rng = TestRng::new(8);
    let n = 352usize;
    let spans = [(0usize, 64usize), (64, 100), (192, 77), (320, 29)];
    let mut w = rand_vec(&mut rng, n, 0.5);
    for i in (0..n).step_by(17) {
        w[i] = 0.0;
    }
    for i in (192..269).step_by(3) {
        w[i] *= 1e-4; // below the proximal threshold
    }
    let mut g = rand_vec(&mut rng, n, 0.1);
    for i in (0..n).step_by(5) {
        g[i] *= 1e-6; // tiny gradients, where eps matters
    }
    let exponential = Schedule::ExponentialDecay {
        decay_steps: 3.0,
        decay_rate: 0.5,
        staircase: false,
    };
    let cosine = Schedule::CosineDecay {
        decay_steps: 10.0,
        alpha: 0.1,
        warmup_target: Some(0.01),
        warmup_steps: 4.0,
    };
    let methods = [
        (Method::keras_default("adam").unwrap(), Schedule::Constant),
        (Method::keras_default("adamw").unwrap(), cosine),
        (Method::keras_default("sgd").unwrap(), exponential),
        (
            Method::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            Schedule::Constant,
        ),
        (
            Method::Sgd {
                momentum: 0.8,
                nesterov: true,
            },
            exponential,
        ),
        (Method::keras_default("rmsprop").unwrap(), cosine),
        (
            Method::RmsProp {
                rho: 0.8,
                momentum: 0.5,
                eps: 1e-6,
                centered: true,
            },
            Schedule::Constant,
        ),
        (
            Method::RmsProp {
                rho: 0.9,
                momentum: 0.0,
                eps: 1e-7,
                centered: true,
            },
            exponential,
        ),
    ];
    let cases = [
        (0.0f32, GradClip::None, 0u64),
        (0.004, GradClip::Norm(0.3), 6),
        (0.0, GradClip::GlobalNorm(0.4), 999),
        (0.01, GradClip::Value(0.02), 2),
    ];
    for (method, schedule) in methods {
        // four tensors with different penalties, one proximal where the method defines the step
        let regs = [
            Regularizer {
                l1: 0.01,
                l2: 0.0,
                proximal: false,
            },
            Regularizer {
                l1: 0.0,
                l2: 0.02,
                proximal: false,
            },
            Regularizer {
                l1: 0.003,
                l2: 0.005,
                proximal: method.proximal_defined(),
            },
            Regularizer::default(),
        ];
        let segs: Vec<Segment> = spans
            .iter()
            .zip(&regs)
            .map(|(&(start, len), r)| Segment {
                start: start as u32,
                len: len as u32,
                l1: r.l1,
                l2: r.l2,
                proximal: r.proximal as u32,
                ..Default::default()
            })
            .collect();
        // the optimizer's state: moments of either sign, velocities positive and above the average
        // gradient's square (RMSprop centered)
        let init: Vec<Vec<f32>> = method
            .slot_names()
            .iter()
            .map(|&name| match name {
                "v" | "velocity" => rand_vec(&mut rng, n, 0.001)
                    .iter()
                    .map(|x| x.abs() + 1e-4)
                    .collect(),
                "average_gradient" => rand_vec(&mut rng, n, 0.005),
                _ => rand_vec(&mut rng, n, 0.01),
            })
            .collect();
        for (wd, clip, step) in cases {
            let h = Settings {
                lr: 3e-3,
                weight_decay: wd,
                clip,
                method,
                schedule,
            };
            let what = format!("{method:?} {schedule:?} (step {step}, wd {wd}, {clip:?})");
            let prologue = Prologue::new(ctx, &segs, n, &h, 1).unwrap();
            let opt = build_optimizer(ctx, n, &h);
            let (params, grads) = (
                ctx.storage_init("w", bytemuck::cast_slice(&w)),
                ctx.storage_init("g", bytemuck::cast_slice(&g)),
            );
            let state = ctx.storage_init(
                "state",
                bytemuck::bytes_of(&State {
                    step: step as u32,
                    batch: 0,
                }),
            );
            let slots = opt.slots();
            let names: Vec<&str> = slots.iter().map(|s| s.0).collect();
            assert_eq!(names, method.slot_names(), "{what}: slot names");
            for (s, v) in slots.iter().zip(&init) {
                ctx.write(s.1, 0, v);
            }
            prologue.set_step_sizes(ctx, step, 1);
            let io = UpdateIo {
                params: &params,
                grads: &grads,
                state: &state,
            };
            run(ctx, &pipes, |r| {
                prologue.record_regularization_loss(r, &params);
                prologue.record_gradient_sumsq(r, &io);
                opt.record(r, &prologue, &io);
            });
            // twin: penalty gradient per tensor, Keras' clipping over all of them, then the optimizer
            let mut total: Vec<Vec<f32>> = spans
                .iter()
                .zip(&regs)
                .map(|(&(s, l), r)| r::total_gradient(&w[s..s + l], &g[s..s + l], r))
                .collect();
            if matches!(clip, GradClip::Norm(_) | GradClip::GlobalNorm(_)) {
                let want: Vec<f64> = total
                    .iter()
                    .map(|t| t.iter().map(|&x| x as f64 * x as f64).sum())
                    .collect();
                assert_close64(
                    "gradient sums of squares",
                    &f64s(&read(ctx, &prologue.sumsq, 4)),
                    &want,
                    1e-9,
                    1e-5,
                );
            }
            r::clip_gradients(&mut total, clip);
            let mut tw = w.clone();
            let mut ts = init.clone();
            for (k, &(s, l)) in spans.iter().enumerate() {
                let prox = if regs[k].proximal { regs[k].l1 } else { 0.0 };
                let mut mine: Vec<&mut [f32]> = ts.iter_mut().map(|t| &mut t[s..s + l]).collect();
                r::optimizer_update(&mut tw[s..s + l], &total[k], &mut mine, step + 1, &h, prox);
            }
            let got_w = read(ctx, &params, n);
            assert_close(&format!("{what} w"), &got_w, &tw, 1e-8, 1e-5);
            for ((name, buf), want) in slots.iter().zip(&ts) {
                assert_close(
                    &format!("{what} {name}"),
                    &read(ctx, buf, n),
                    want,
                    1e-9,
                    1e-5,
                );
            }
            // the padding between tensors is left alone
            assert_eq!(got_w[164..192], w[164..192], "{what}: padding");
            // exact zeros where the twin has them (Adam's step size is large enough here to leave some)
            let zeros = |v: &[f32]| v[192..269].iter().filter(|&&x| x == 0.0).count();
            assert_eq!(zeros(&got_w), zeros(&tw), "{what}: proximal zeros");
            if matches!(method, Method::Adam { .. } | Method::AdamW { .. }) {
                assert!(zeros(&got_w) >= 5, "{what}: proximal L1 leaves exact zeros");
            }
            assert!(
                got_w[0..64]
                    .iter()
                    .zip(&w[0..64])
                    .all(|(&x, &x0)| x != 0.0 || x0 == 0.0),
                "{what}: plain L1 leaves none"
            );
            // the regularization loss of the weights before the update
            let want: f64 = spans
                .iter()
                .zip(&regs)
                .map(|(&(s, l), r)| r::regularization_loss(&w[s..s + l], r.l1, r.l2))
                .sum();
            assert_close64(
                "regularization loss",
                &f64s(&read(ctx, &prologue.reg, 1)),
                &[want],
                1e-6,
                1e-5,
            );
        }
    }
}

#[test]
fn constraints_match_twin_over_keras_axes() {
    let (ctx, _g) = gpu();
    let pipes = pipes(ctx);
    let mut rng = TestRng::new(9);
    let shape = [3usize, 2, 5, 7]; // a conv kernel (kh, kw, in, out) of odd sizes
    let len: usize = shape.iter().product();
    let offset = 64usize; // the tensor sits inside a larger flat buffer, as in the trainer
    let w = rand_vec(&mut rng, len, 1.5);
    let mut flat = rand_vec(&mut rng, offset + len + 64, 9.0);
    flat[offset..offset + len].copy_from_slice(&w);
    let cases = vec![
        Constraint::ClipByValue { lo: -0.5, hi: 0.75 },
        Constraint::NonNeg,
        Constraint::UnitNorm { axes: vec![0] },
        Constraint::UnitNorm {
            axes: vec![0, 1, 2],
        },
        Constraint::UnitNorm { axes: vec![3] },
        Constraint::MaxNorm {
            max_value: 1.3,
            axes: vec![0, 1, 2],
        },
        Constraint::MaxNorm {
            max_value: 2.0,
            axes: vec![1, 3],
        },
        Constraint::MinMaxNorm {
            min_value: 0.5,
            max_value: 1.0,
            rate: 0.7,
            axes: vec![0, 1, 2],
        },
        Constraint::MinMaxNorm {
            min_value: 2.5,
            max_value: 4.0,
            rate: 1.0,
            axes: vec![2],
        },
    ];
    for c in cases {
        let params = ctx.storage_init("params", bytemuck::cast_slice(&flat));
        run(ctx, &pipes, |r| {
            constraints::record(r, &params, &c, offset, &shape)
        });
        let got = read(ctx, &params, flat.len());
        let mut want = w.clone();
        r::apply_constraint(&mut want, &shape, &c);
        assert_close(
            &format!("{c:?}"),
            &got[offset..offset + len],
            &want,
            1e-6,
            1e-6,
        );
        assert_eq!(
            &got[..offset],
            &flat[..offset],
            "{c:?} touched elements before the tensor"
        );
        assert_eq!(
            &got[offset + len..],
            &flat[offset + len..],
            "{c:?} touched elements after the tensor"
        );
    }
}

#[test]
fn grids_above_65535_workgroups_fold_into_a_second_dimension() {
    let (ctx, _g) = gpu();
    let pipes = pipes(ctx);
    let len: usize = 65_535 * 64 + 1_000; // one more workgroup than a dimension holds, and a ragged end
    let groups = ctx.fold(len.div_ceil(64) as u32);
    assert!(groups.1 > 1, "{groups:?}");
    let w: Vec<f32> = (0..len + 64)
        .map(|i| if i % 2 == 0 { 5.0 } else { -5.0 })
        .collect();
    let params = ctx.storage_init("params", bytemuck::cast_slice(&w));
    let clip = Constraint::ClipByValue { lo: -1.0, hi: 1.0 };
    run(ctx, &pipes, |r| {
        constraints::record(r, &params, &clip, 0, &[len])
    });
    let got = read(ctx, &params, w.len());
    assert!(
        got[..len]
            .iter()
            .enumerate()
            .all(|(i, &v)| v == if i % 2 == 0 { 1.0 } else { -1.0 }),
        "every element reached"
    );
    assert!(
        got[len..].iter().all(|v| v.abs() == 5.0),
        "nothing past the end"
    );
}
