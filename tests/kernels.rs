//! Every GPU kernel against its CPU twin in src/reference on random data of odd sizes (not multiples of
//! the workgroup size or of the 4/8-wide register tiles), one kernel at a time.

mod common;

use clampnet::gpu::{uniforms as U, Kernel, Pipelines};
use clampnet::reference as r;
use common::*;

fn rand_vec(rng: &mut TestRng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| rng.sym(a)).collect()
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn softmax_xent_matches_twin() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(1);
    for (batch, classes, scale) in [(7usize, 10usize, 3.0f32), (5, 3, 30.0), (67, 10, 12.0)] {
        let logits = rand_vec(&mut rng, batch * classes, scale);
        let labels: Vec<u32> = (0..batch)
            .map(|_| rng.next_u32() % classes as u32)
            .collect();
        let p = U::LossParams {
            batch: batch as u32,
            classes: classes as u32,
            advance: 0,
            _pad: 0,
        };
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::SoftmaxXent,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (1, Buf::In(f32s(&logits))),
                (2, Buf::In(bytemuck::cast_slice(&labels))),
                (3, Buf::Out(batch * classes)),
                (4, Buf::Out(batch * 2)),
            ],
            (batch.div_ceil(64) as u32, 1, 1),
        );
        let (ce, dl, correct) = r::softmax_xent(batch, classes, &to64(&logits), &labels);
        let per = to_f32(&out[1]);
        let ce_gpu: Vec<f32> = per.iter().step_by(2).copied().collect();
        let ok_gpu: Vec<f32> = per.iter().skip(1).step_by(2).copied().collect();
        // f32 logsumexp: a few ulp of the largest logit
        assert_close64(
            "cross-entropy",
            &ce_gpu.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            &ce,
            1e-6 * scale as f64,
            1e-6,
        );
        assert_close64(
            "dlogits",
            &to_f32(&out[0])
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>(),
            &dl,
            1e-7,
            1e-5,
        );
        assert_eq!(
            ok_gpu,
            correct.iter().map(|&c| c as u8 as f32).collect::<Vec<_>>()
        );
    }
}

fn conv_params(d: &r::ConvDims, relu: bool, rows_per: usize) -> U::ConvParams {
    U::ConvParams {
        batch: d.batch as u32,
        in_h: d.in_h as u32,
        in_w: d.in_w as u32,
        in_c: d.in_c as u32,
        out_h: d.out_h as u32,
        out_w: d.out_w as u32,
        out_c: d.out_c as u32,
        k: d.k as u32,
        pad: d.pad as u32,
        relu: relu as u32,
        rows_per: rows_per as u32,
        chunks: (d.batch * d.out_h.div_ceil(rows_per)) as u32,
        ..Default::default()
    }
}

/// (batch, h, w, in_c, out_c, k, same, relu, rows_per)
type ConvCase = (usize, usize, usize, usize, usize, usize, bool, bool, usize);
const CONV_CASES: [ConvCase; 5] = [
    (3, 28, 28, 1, 32, 3, false, true, 4), // the reference layer
    (2, 9, 7, 3, 5, 3, true, true, 2),     // RGB, same padding, 5 channels (not a multiple of 8)
    (3, 6, 5, 4, 11, 2, false, false, 3),  // even kernel, linear, 11 channels
    (1, 5, 9, 2, 9, 5, true, true, 5),     // 5x5 same
    (2, 7, 7, 1, 1, 1, false, true, 1),    // 1x1 kernel, one filter
];

#[test]
fn conv2d_forward_matches_twin() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(2);
    for (b, h, w, ic, oc, k, same, relu, rows_per) in CONV_CASES {
        let d = r::ConvDims::new(b, h, w, ic, oc, k, same);
        let x = rand_vec(&mut rng, b * h * w * ic, 1.0);
        let kern = rand_vec(&mut rng, k * k * ic * oc, 0.7);
        let bias = rand_vec(&mut rng, oc, 0.3);
        let p = conv_params(&d, relu, rows_per);
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::Conv2dForward,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (1, Buf::In(f32s(&x))),
                (2, Buf::In(f32s(&kern))),
                (3, Buf::In(f32s(&bias))),
                (4, Buf::Out(b * d.out_h * d.out_w * oc)),
            ],
            (
                (d.out_h * d.out_w).div_ceil(256) as u32,
                b as u32,
                oc.div_ceil(8) as u32,
            ),
        );
        let want = r::conv2d_forward(&d, &to64(&x), &to64(&kern), &to64(&bias), relu);
        assert_close64(
            &format!("conv forward {d:?}"),
            &to_f32(&out[0])
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>(),
            &want,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn dense_forward_matches_twin() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(3);
    for (batch, in_n, out_n, relu, xs) in [
        (5usize, 5408usize, 10usize, false, 3.0f32),
        (13, 37, 19, true, 1.0),
        (1, 3, 1, false, 1.0),
        (67, 129, 8, true, 1.0),
    ] {
        let x = rand_vec(&mut rng, batch * in_n, xs);
        let kern = rand_vec(&mut rng, in_n * out_n, 0.1);
        let bias = rand_vec(&mut rng, out_n, 0.3);
        let chunk = 32u32;
        let chunks = (in_n as u32).div_ceil(chunk);
        let p = U::DenseParams {
            batch: batch as u32,
            in_n: in_n as u32,
            out_n: out_n as u32,
            relu: relu as u32,
            chunk,
            chunks,
            ..Default::default()
        };
        let partials = run_kernel(
            ctx,
            &pipes,
            Kernel::DenseForward,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (1, Buf::In(f32s(&x))),
                (2, Buf::In(f32s(&kern))),
                (9, Buf::Out(chunks as usize * batch * out_n)),
            ],
            (
                chunks.div_ceil(64),
                batch.div_ceil(8) as u32,
                out_n.div_ceil(16) as u32,
            ),
        );
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::DenseForwardReduce,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (3, Buf::In(f32s(&bias))),
                (4, Buf::Out(batch * out_n)),
                (9, Buf::In(&partials[0])),
            ],
            ((batch * out_n).div_ceil(64) as u32, 1, 1),
        );
        let want = r::dense_forward(
            batch,
            in_n,
            out_n,
            &to64(&x),
            &to64(&kern),
            &to64(&bias),
            relu,
        );
        assert_close64(
            &format!("dense forward {batch}x{in_n}x{out_n}"),
            &to_f32(&out[0])
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>(),
            &want,
            2e-6,
            2e-6,
        );
        // the GPU shape: one pass, a workgroup per (example, 16 outputs)
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::DenseForwardGpu,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (1, Buf::In(f32s(&x))),
                (2, Buf::In(f32s(&kern))),
                (3, Buf::In(f32s(&bias))),
                (4, Buf::Out(batch * out_n)),
            ],
            (out_n.div_ceil(16) as u32, batch as u32, 1),
        );
        assert_close64(
            &format!("dense forward (GPU shape) {batch}x{in_n}x{out_n}"),
            &f64s(&out[0]),
            &want,
            2e-6,
            2e-6,
        );
    }
}

/// Sum conv weight-gradient partials with `reduce` and check dK and db against the twin's.
fn check_reduced(
    ctx: &clampnet::gpu::Context,
    pipes: &Pipelines,
    reduce: Kernel,
    p: &U::ConvParams,
    partials: &[u8],
    (want_dk, want_db): (&[f64], &[f64]),
    what: &str,
) {
    let outputs = (p.k * p.k * p.in_c + 1) as usize * p.out_c as usize;
    // workgroups of 64 outputs, or of 32 outputs x 8 lanes (the GPU shape)
    let per_group = if reduce == Kernel::Conv2dWeightReduceGpu {
        32
    } else {
        64
    };
    let reduced = run_kernel(
        ctx,
        pipes,
        reduce,
        false,
        0,
        bytemuck::bytes_of(p),
        &[
            (6, Buf::Out(want_dk.len())),
            (7, Buf::Out(want_db.len())),
            (9, Buf::In(partials)),
        ],
        (outputs.div_ceil(per_group) as u32, 1, 1),
    );
    assert_close64(
        &format!("{what} dK"),
        &f64s(&reduced[0]),
        want_dk,
        1e-5,
        1e-5,
    );
    assert_close64(
        &format!("{what} db"),
        &f64s(&reduced[1]),
        want_db,
        1e-5,
        1e-5,
    );
}

fn f64s(b: &[u8]) -> Vec<f64> {
    to_f32(b).iter().map(|&v| v as f64).collect()
}

#[test]
fn conv2d_weight_gradient_and_input_gradient_match_twin() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(4);
    for (b, h, w, ic, oc, k, same, relu, rows_per) in CONV_CASES {
        let d = r::ConvDims::new(b, h, w, ic, oc, k, same);
        let x = rand_vec(&mut rng, b * h * w * ic, 1.0);
        let kern = rand_vec(&mut rng, k * k * ic * oc, 0.7);
        let bias = rand_vec(&mut rng, oc, 0.3);
        let y = r::conv2d_forward(&d, &to64(&x), &to64(&kern), &to64(&bias), relu);
        let y32: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        let dy = rand_vec(&mut rng, y.len(), 1.0);
        let p = conv_params(&d, relu, rows_per);
        let kkc = k * k * ic;
        let taps = clampnet::train::conv_taps(&p);
        // gate = true (relu layers only): the kernel applies relu'(y); gate = false: dy arrives gated
        let gates: &[bool] = if relu { &[true, false] } else { &[false] };
        for &gate in gates {
            let (want_dk, want_db, want_dx) =
                r::conv2d_backward(&d, &to64(&x), &to64(&kern), &y, &to64(&dy), relu && gate);
            let partials = run_kernel(
                ctx,
                &pipes,
                Kernel::Conv2dWeightPartials,
                gate,
                0,
                bytemuck::bytes_of(&p),
                &[
                    (1, Buf::In(f32s(&x))),
                    (4, Buf::In(f32s(&y32))),
                    (5, Buf::In(f32s(&dy))),
                    (9, Buf::Out(p.chunks as usize * (kkc + 1) * oc)),
                    (10, Buf::In(bytemuck::cast_slice(&taps))),
                    (11, Buf::In(&[0u8; 4])),
                ],
                (
                    (p.chunks as usize).div_ceil(64) as u32,
                    (kkc + 1).div_ceil(clampnet::train::WEIGHT_GRAD_TILE.0) as u32,
                    oc.div_ceil(clampnet::train::WEIGHT_GRAD_TILE.1 as usize) as u32,
                ),
            );
            let what = format!("conv {d:?} gate {gate}");
            check_reduced(
                ctx,
                &pipes,
                Kernel::Conv2dWeightReduce,
                &p,
                &partials[0],
                (&want_dk, &want_db),
                &what,
            );
            let dx = run_kernel(
                ctx,
                &pipes,
                Kernel::Conv2dBackwardInput,
                gate,
                0,
                bytemuck::bytes_of(&p),
                &[
                    (2, Buf::In(f32s(&kern))),
                    (4, Buf::In(f32s(&y32))),
                    (5, Buf::In(f32s(&dy))),
                    (8, Buf::Out(x.len())),
                    (11, Buf::In(&[0u8; 4])),
                ],
                ((h * w).div_ceil(64) as u32, b as u32, 1),
            );
            assert_close64(&format!("{what} dx"), &f64s(&dx[0]), &want_dx, 1e-5, 1e-5);
        }
    }
}

#[test]
fn maxpool_forward_and_backward_match_twin() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(5);
    // odd sizes leave rows/columns outside every window; ties are made on purpose (values from a small set)
    for (batch, h, w, c, k) in [
        (3usize, 26usize, 26usize, 32usize, 2usize),
        (2, 7, 9, 3, 2),
        (1, 10, 11, 5, 3),
        (2, 4, 4, 1, 4),
    ] {
        let d = r::PoolDims {
            batch,
            in_h: h,
            in_w: w,
            c,
            k,
        };
        let x: Vec<f32> = (0..batch * h * w * c)
            .map(|_| (rng.next_u32() % 7) as f32 * 0.5 - 1.5)
            .collect();
        let p = U::PoolParams {
            batch: batch as u32,
            in_h: h as u32,
            in_w: w as u32,
            c: c as u32,
            out_h: d.out_h() as u32,
            out_w: d.out_w() as u32,
            k: k as u32,
            _pad: 0,
        };
        let n_out = batch * d.out_h() * d.out_w() * c;
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::MaxPoolForward,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (1, Buf::In(f32s(&x))),
                (2, Buf::Out(n_out)),
                (3, Buf::Out(n_out)),
            ],
            ((d.out_h() * d.out_w()).div_ceil(64) as u32, batch as u32, 1),
        );
        let (want_y, want_arg) = r::maxpool_forward(&d, &to64(&x));
        assert_close64("pool y", &f64s(&out[0]), &want_y, 0.0, 0.0);
        let arg: Vec<u32> = bytemuck::pod_collect_to_vec(&out[1]);
        assert_eq!(arg, want_arg, "argmax: first maximum in row-major order");
        let dy = rand_vec(&mut rng, n_out, 1.0);
        for gate in [false, true] {
            let dx = run_kernel(
                ctx,
                &pipes,
                Kernel::MaxPoolBackward,
                gate,
                0,
                bytemuck::bytes_of(&p),
                &[
                    (2, Buf::In(&out[0])),
                    (3, Buf::In(&out[1])),
                    (4, Buf::In(f32s(&dy))),
                    (5, Buf::Out(x.len())),
                ],
                ((h * w).div_ceil(64) as u32, batch as u32, 1),
            );
            // gate: relu' of the layer before, i.e. no gradient where the window maximum is <= 0
            let dy_gated: Vec<f64> = dy
                .iter()
                .zip(&want_y)
                .map(|(&g, &y)| if !gate || y > 0.0 { g as f64 } else { 0.0 })
                .collect();
            let want_dx = r::maxpool_backward(&d, &want_arg, &dy_gated);
            assert_close64(
                &format!("pool dx gate {gate}"),
                &f64s(&dx[0]),
                &want_dx,
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn dense_backward_matches_twin() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(6);
    for (batch, in_n, out_n, relu) in [
        (32usize, 5408usize, 10usize, false),
        (13, 37, 19, true), // 19 outputs: two passes of 16
        (1, 3, 1, true),
        (67, 129, 8, true),
        (5, 11, 40, false), // three passes
    ] {
        let x = rand_vec(&mut rng, batch * in_n, 1.0);
        let kern = rand_vec(&mut rng, in_n * out_n, 0.3);
        let bias = rand_vec(&mut rng, out_n, 0.3);
        let y = r::dense_forward(
            batch,
            in_n,
            out_n,
            &to64(&x),
            &to64(&kern),
            &to64(&bias),
            relu,
        );
        let y32: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        let dy = rand_vec(&mut rng, batch * out_n, 1.0);
        let p = U::DenseParams {
            batch: batch as u32,
            in_n: in_n as u32,
            out_n: out_n as u32,
            relu: relu as u32,
            ..Default::default()
        };
        // every variant: with and without relu', dy from a storage binding or a uniform window
        for (gate, dy_uniform) in [(relu, false), (false, false), (relu, true), (false, true)] {
            let (dw, db, dx) = r::dense_backward(
                batch,
                in_n,
                out_n,
                &to64(&x),
                &to64(&kern),
                &y,
                &to64(&dy),
                gate,
            );
            let none = [0u8; 4];
            let (dy_storage, dy_window) = if dy_uniform {
                (&none[..], f32s(&dy))
            } else {
                (f32s(&dy), &none[..])
            };
            let run = |k: Kernel, out: (u32, usize), groups| {
                let k = if dy_uniform { k.dy_uniform() } else { k };
                let mut b: Vec<(u32, Buf)> = vec![
                    (1, Buf::In(f32s(&x))),
                    (2, Buf::In(f32s(&kern))),
                    (4, Buf::In(f32s(&y32))),
                    (5, Buf::In(dy_storage)),
                    (13, Buf::Window(dy_window)),
                ];
                b.retain(|(n, _)| match k {
                    Kernel::DenseBackwardWeight | Kernel::DenseBackwardWeightDyUniform => *n != 2,
                    Kernel::DenseBackwardBias | Kernel::DenseBackwardBiasDyUniform => {
                        *n == 4 || *n == 5 || *n == 13
                    }
                    _ => *n != 1,
                });
                b.push((out.0, Buf::Out(out.1)));
                run_kernel(ctx, &pipes, k, gate, 0, bytemuck::bytes_of(&p), &b, groups).remove(0)
            };
            let what = format!("dense {batch}x{in_n}x{out_n} gate {gate} dy uniform {dy_uniform}");
            let got = run(
                Kernel::DenseBackwardWeight,
                (6, in_n * out_n),
                (in_n.div_ceil(256) as u32, out_n.div_ceil(16) as u32, 1),
            );
            assert_close64(&format!("{what} dW"), &f64s(&got), &dw, 1e-5, 1e-5);
            let got = run(
                Kernel::DenseBackwardBias,
                (7, out_n),
                (out_n.div_ceil(64) as u32, 1, 1),
            );
            assert_close64(&format!("{what} db"), &f64s(&got), &db, 1e-5, 1e-5);
            let mut got = run(
                Kernel::DenseBackwardInput,
                (8, batch * in_n),
                (in_n.div_ceil(256) as u32, 1, 1),
            );
            if out_n > 16 {
                // the outputs past the first 16 are added by a second pass
                let k = if dy_uniform {
                    Kernel::DenseBackwardInputRestDyUniform
                } else {
                    Kernel::DenseBackwardInputRest
                };
                let mut b: Vec<(u32, Buf)> = vec![
                    (2, Buf::In(f32s(&kern))),
                    (4, Buf::In(f32s(&y32))),
                    (5, Buf::In(dy_storage)),
                    (13, Buf::Window(dy_window)),
                ];
                b.push((8, Buf::InOut(&got)));
                got = run_kernel(
                    ctx,
                    &pipes,
                    k,
                    gate,
                    0,
                    bytemuck::bytes_of(&p),
                    &b,
                    (in_n.div_ceil(256) as u32, 1, 1),
                )
                .remove(0);
            }
            assert_close64(&format!("{what} dx"), &f64s(&got), &dx, 1e-5, 1e-5);
            if dy_uniform {
                continue;
            }
            // the GPU shapes: the bias gradient is the weight gradient's last row
            let dyb = f32s(&dy);
            let got = run_kernel(
                ctx,
                &pipes,
                Kernel::DenseBackwardWeightGpu,
                gate,
                0,
                bytemuck::bytes_of(&p),
                &[
                    (1, Buf::In(f32s(&x))),
                    (4, Buf::In(f32s(&y32))),
                    (5, Buf::In(dyb)),
                    (6, Buf::Out(in_n * out_n)),
                    (7, Buf::Out(out_n)),
                ],
                (((in_n + 1) * out_n).div_ceil(256) as u32, 1, 1),
            );
            assert_close64(
                &format!("{what} dW (GPU shape)"),
                &f64s(&got[0]),
                &dw,
                1e-5,
                1e-5,
            );
            assert_close64(
                &format!("{what} db (GPU shape)"),
                &f64s(&got[1]),
                &db,
                1e-5,
                1e-5,
            );
            let got = run_kernel(
                ctx,
                &pipes,
                Kernel::DenseBackwardInputGpu,
                gate,
                0,
                bytemuck::bytes_of(&p),
                &[
                    (2, Buf::In(f32s(&kern))),
                    (4, Buf::In(f32s(&y32))),
                    (5, Buf::In(dyb)),
                    (8, Buf::Out(batch * in_n)),
                ],
                ((batch * in_n).div_ceil(256) as u32, 1, 1),
            );
            assert_close64(
                &format!("{what} dx (GPU shape)"),
                &f64s(&got[0]),
                &dx,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn gather_matches_twin() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(7);
    let (n, per_image, full_batch) = (23usize, 13usize, 5usize); // odd: byte packing crosses u32 words
    let images: Vec<u8> = (0..n * per_image)
        .map(|_| (rng.next_u32() % 256) as u8)
        .collect();
    let labels: Vec<u32> = (0..n).map(|_| rng.next_u32() % 10).collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.reverse();
    order.swap(3, 17);
    for (batch_index, rows) in [(0usize, 5usize), (2, 5), (4, 3)] {
        let p = U::GatherParams {
            rows: rows as u32,
            full_batch: full_batch as u32,
            per_image: per_image as u32,
            _pad: 0,
        };
        let state = U::State {
            step: 0,
            batch: batch_index as u32,
        };
        let mut packed = images.clone();
        packed.resize(images.len().div_ceil(4) * 4, 0);
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::GatherBatch,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (1, Buf::In(&packed)),
                (2, Buf::In(bytemuck::cast_slice(&labels))),
                (3, Buf::In(bytemuck::cast_slice(&order))),
                (4, Buf::In(bytemuck::bytes_of(&state))),
                (5, Buf::Out(rows * per_image)),
                (6, Buf::Out(rows)),
                (7, Buf::Window(f32s(&clampnet::train::byte_to_unit()))),
            ],
            (per_image.div_ceil(64) as u32, rows as u32, 1),
        );
        let (x, y) = r::gather_batch(
            &images,
            &labels,
            &order,
            batch_index,
            full_batch,
            rows,
            per_image,
        );
        assert_eq!(to_f32(&out[0]), x, "gathered pixels (u8 / 255, exact)");
        assert_eq!(
            bytemuck::pod_collect_to_vec::<u8, u32>(&out[1]),
            y,
            "gathered labels"
        );
    }
}

#[test]
fn adam_with_penalties_clipping_and_proximal_l1_matches_twin() {
    use clampnet::restrict::Regularizer;
    use clampnet::train::{GradClip, Hyper};
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(8);
    let n = 352usize;
    // four tensors with different penalties (one proximal), starting 64-aligned as the model lays them
    // out, with alignment padding between them and after the last (the buffers hold whole vec4s)
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
            proximal: true,
        },
        Regularizer::default(),
    ];
    let spans = [(0usize, 64usize), (64, 100), (192, 77), (320, 29)];
    let segs: Vec<U::Segment> = spans
        .iter()
        .zip(&regs)
        .map(|(&(start, len), r)| U::Segment {
            start: start as u32,
            len: len as u32,
            l1: r.l1,
            l2: r.l2,
            proximal: r.proximal as u32,
            ..Default::default()
        })
        .collect();
    let mut w = rand_vec(&mut rng, n, 0.5);
    for i in (0..n).step_by(17) {
        w[i] = 0.0;
    }
    for i in (192..269).step_by(3) {
        w[i] *= 1e-4; // below the proximal threshold
    }
    let m = rand_vec(&mut rng, n, 0.01);
    let v: Vec<f32> = rand_vec(&mut rng, n, 0.001)
        .iter()
        .map(|x| x.abs())
        .collect();
    let mut g = rand_vec(&mut rng, n, 0.1);
    for i in (0..n).step_by(5) {
        g[i] *= 1e-6; // tiny gradients, where eps matters
    }
    let cases = [
        (0.0f32, GradClip::None, 0u32),
        (0.004, GradClip::Norm(0.3), 6),
        (0.0, GradClip::GlobalNorm(0.4), 999),
        (0.01, GradClip::Value(0.02), 2),
    ];
    for (wd, clip, step) in cases {
        let h = Hyper {
            lr: 3e-3,
            weight_decay: wd,
            clip,
            ..Default::default()
        };
        let (clip_mode, clip_value) = match clip {
            GradClip::None => (0, 0.0),
            GradClip::Norm(c) => (1, c),
            GradClip::GlobalNorm(c) => (2, c),
            GradClip::Value(c) => (3, c),
        };
        let p = U::AdamParams {
            n: n as u32,
            n_segments: segs.len() as u32,
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            one_minus_beta1: (1.0 - h.beta1 as f64) as f32,
            one_minus_beta2: (1.0 - h.beta2 as f64) as f32,
            eps: h.eps,
            weight_decay: wd,
            clip_mode,
            clip_value,
            ..Default::default()
        };
        // gradient sums of squares per tensor (what clipnorm and global_clipnorm read)
        let sumsq = run_kernel(
            ctx,
            &pipes,
            Kernel::GradientSumsq,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (1, Buf::In(f32s(&g))),
                (2, Buf::Window(bytemuck::cast_slice(&segs))),
                (4, Buf::In(f32s(&w))),
                (9, Buf::Out(segs.len())),
            ],
            (segs.len() as u32, 1, 1),
        )
        .remove(0);
        // twin: penalty gradient per tensor, Keras' clipping over all of them, then Adam (+ prox)
        let mut total: Vec<Vec<f32>> = spans
            .iter()
            .zip(&regs)
            .map(|(&(s, l), r)| r::total_gradient(&w[s..s + l], &g[s..s + l], r))
            .collect();
        let want_sumsq: Vec<f64> = total
            .iter()
            .map(|t| t.iter().map(|&x| x as f64 * x as f64).sum())
            .collect();
        assert_close64(
            "gradient sums of squares",
            &f64s(&sumsq),
            &want_sumsq,
            1e-9,
            1e-5,
        );
        r::clip_gradients(&mut total, clip);
        // the alpha table of an epoch; state.batch picks this step's entry
        let state = U::State { step, batch: 2 };
        let alphas = [0.0, 0.0, h.alpha(step as u64 + 1), 0.0];
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::AdamUpdate,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (2, Buf::Window(bytemuck::cast_slice(&segs))),
                (3, Buf::In(bytemuck::bytes_of(&state))),
                (8, Buf::In(f32s(&alphas))),
                (9, Buf::In(&sumsq)),
                (10, Buf::InOut(f32s(&w))),
                (11, Buf::In(f32s(&g))),
                (12, Buf::InOut(f32s(&m))),
                (13, Buf::InOut(f32s(&v))),
            ],
            (n.div_ceil(64) as u32, 1, 1),
        );
        let (mut tw, mut tm, mut tv) = (w.clone(), m.clone(), v.clone());
        for (k, &(s, l)) in spans.iter().enumerate() {
            let prox = if regs[k].proximal { regs[k].l1 } else { 0.0 };
            r::adam_update(
                &mut tw[s..s + l],
                &total[k],
                &mut tm[s..s + l],
                &mut tv[s..s + l],
                step as u64 + 1,
                &h,
                prox,
            );
        }
        let what = format!("adam (step {step}, wd {wd}, {clip:?})");
        assert_close(&format!("{what} w"), &to_f32(&out[0]), &tw, 1e-8, 1e-5);
        assert_close(&format!("{what} m"), &to_f32(&out[1]), &tm, 1e-9, 1e-5);
        assert_close(&format!("{what} v"), &to_f32(&out[2]), &tv, 1e-10, 1e-5);
        let zeros = to_f32(&out[0])[192..269]
            .iter()
            .filter(|&&x| x == 0.0)
            .count();
        assert!(
            zeros >= 5,
            "{what}: proximal L1 leaves exact zeros ({zeros})"
        );
        assert!(
            to_f32(&out[0])[0..64].iter().filter(|&&x| x == 0.0).count() == 0,
            "{what}: plain L1 leaves none"
        );
    }
    let p = U::AdamParams {
        n: n as u32,
        n_segments: segs.len() as u32,
        ..Default::default()
    };
    let reg = run_kernel(
        ctx,
        &pipes,
        Kernel::RegularizationLoss,
        false,
        0,
        bytemuck::bytes_of(&p),
        &[
            (2, Buf::Window(bytemuck::cast_slice(&segs))),
            (4, Buf::In(f32s(&w))),
            (7, Buf::Out(1)),
        ],
        (1, 1, 1),
    );
    let want: f64 = spans
        .iter()
        .zip(&regs)
        .map(|(&(s, l), r)| r::regularization_loss(&w[s..s + l], r.l1, r.l2))
        .sum();
    assert_close64("regularization loss", &f64s(&reg[0]), &[want], 1e-6, 1e-5);
}

#[test]
fn constraints_match_twin_over_keras_axes() {
    use clampnet::restrict::Constraint;
    use clampnet::train::{constraint_uniform, ConstraintUniform};
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
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
        let out = match constraint_uniform(&c, offset, &shape) {
            ConstraintUniform::Clip(p) => run_kernel(
                ctx,
                &pipes,
                Kernel::ClipByValue,
                false,
                0,
                bytemuck::bytes_of(&p),
                &[(2, Buf::InOut(f32s(&flat)))],
                (len.div_ceil(64) as u32, 1, 1),
            ),
            ConstraintUniform::Norm(p) => run_kernel(
                ctx,
                &pipes,
                Kernel::NormConstraint,
                false,
                1,
                bytemuck::bytes_of(&p),
                &[(2, Buf::InOut(f32s(&flat)))],
                (p.n_groups.div_ceil(64), 1, 1),
            ),
        };
        let got = to_f32(&out[0]);
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
fn accumulate_sums_metrics_and_advances_state() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let per: Vec<f32> = vec![0.5, 1.0, 2.0, 0.0, 1.5, 1.0]; // (ce, correct) x 3
    let reg = [0.25f32];
    let metrics = U::Metrics {
        loss_sum: 10.0,
        correct: 4.0,
        count: 8.0,
        nonfinite: 0,
    };
    for (advance, want_state) in [(3u32, (8u32, 3u32)), (2, (7, 3))] {
        let p = U::LossParams {
            batch: 3,
            classes: 10,
            advance,
            _pad: 0,
        };
        let state = U::State { step: 7, batch: 2 };
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::Accumulate,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (4, Buf::In(f32s(&per))),
                (5, Buf::In(f32s(&reg))),
                (6, Buf::InOut(bytemuck::bytes_of(&metrics))),
                (7, Buf::InOut(bytemuck::bytes_of(&state))),
            ],
            (1, 1, 1),
        );
        let m: U::Metrics = bytemuck::pod_read_unaligned(&out[0]);
        // mean ce = 4/3, plus reg 0.25, weighted by the batch of 3
        assert!(
            (m.loss_sum - (10.0 + (4.0 / 3.0 + 0.25) * 3.0)).abs() < 1e-5,
            "{m:?}"
        );
        assert_eq!((m.correct, m.count, m.nonfinite), (6.0, 11.0, 0));
        let s: U::State = bytemuck::pod_read_unaligned(&out[1]);
        assert_eq!((s.step, s.batch), want_state);
    }
    // a NaN loss raises the flag
    let bad = vec![f32::NAN, 0.0];
    let p = U::LossParams {
        batch: 1,
        classes: 10,
        advance: 3,
        _pad: 0,
    };
    let out = run_kernel(
        ctx,
        &pipes,
        Kernel::Accumulate,
        false,
        0,
        bytemuck::bytes_of(&p),
        &[
            (4, Buf::In(f32s(&bad))),
            (5, Buf::In(f32s(&[0.0]))),
            (6, Buf::Out(4)),
            (7, Buf::Out(2)),
        ],
        (1, 1, 1),
    );
    let m: U::Metrics = bytemuck::pod_read_unaligned(&out[0]);
    assert_eq!(m.nonfinite, 1);
}

#[test]
fn grids_above_65535_workgroups_fold_into_a_second_dimension() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let len: usize = 65_535 * 64 + 1_000; // one more workgroup than a dimension holds, and a ragged end
    let groups = ctx.fold(len.div_ceil(64) as u32);
    assert!(groups.1 > 1, "{groups:?}");
    let w: Vec<f32> = (0..len + 64)
        .map(|i| if i % 2 == 0 { 5.0 } else { -5.0 })
        .collect();
    let p = U::ClipParams {
        start: 0,
        len: len as u32,
        lo: -1.0,
        hi: 1.0,
        kind: 0,
        ..Default::default()
    };
    let out = run_kernel(
        ctx,
        &pipes,
        Kernel::ClipByValue,
        false,
        0,
        bytemuck::bytes_of(&p),
        &[(2, Buf::InOut(f32s(&w)))],
        (groups.0, groups.1, 1),
    );
    let got = to_f32(&out[0]);
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

#[test]
fn conv_relu_maxpool_fusion_matches_the_unfused_twins() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(12);
    // (batch, h, w, in_c, out_c, k, same, rows_per): odd conv outputs leave a row/column outside every window
    for (b, h, w, ic, oc, k, same, rows_per) in [
        (
            3usize, 28usize, 28usize, 1usize, 32usize, 3usize, false, 4usize,
        ),
        (2, 9, 8, 3, 5, 3, true, 2),
        (2, 7, 7, 2, 11, 2, false, 3),
    ] {
        let d = r::ConvDims::new(b, h, w, ic, oc, k, same);
        let pd = r::PoolDims {
            batch: b,
            in_h: d.out_h,
            in_w: d.out_w,
            c: oc,
            k: 2,
        };
        let x = rand_vec(&mut rng, b * h * w * ic, 1.0);
        let kern = rand_vec(&mut rng, k * k * ic * oc, 0.7);
        let bias = rand_vec(&mut rng, oc, 0.3);
        let p = conv_params(&d, true, rows_per);
        let n_pool = b * pd.out_h() * pd.out_w() * oc;
        let taps = clampnet::train::conv_taps(&p);
        let fwd = run_kernel(
            ctx,
            &pipes,
            Kernel::Conv2dReluMaxPool2Forward,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (1, Buf::In(f32s(&x))),
                (12, Buf::Window(f32s(&kern))),
                (13, Buf::Window(bytemuck::cast_slice(&taps))),
                (3, Buf::In(f32s(&bias))),
                (4, Buf::Out(n_pool)),
                (11, Buf::Out(n_pool)),
            ],
            (
                (pd.out_h() * pd.out_w().div_ceil(2)).div_ceil(32) as u32,
                b as u32,
                oc.div_ceil(16) as u32,
            ),
        );
        let conv_y = r::conv2d_forward(&d, &to64(&x), &to64(&kern), &to64(&bias), true);
        let (want_y, want_arg) = r::maxpool_forward(&pd, &conv_y);
        let what = format!("fused {d:?}");
        assert_close64(
            &format!("{what} pooled"),
            &f64s(&fwd[0]),
            &want_y,
            1e-5,
            1e-5,
        );
        let arg: Vec<u32> = bytemuck::pod_collect_to_vec(&fwd[1]);
        // the unfused pool's choice where the pooled value is > 0; 4 (no position: relu' = 0) where it is 0
        let mismatched = arg
            .iter()
            .zip(&want_arg)
            .zip(&want_y)
            .filter(|((a, e), y)| if **y > 0.0 { a != e } else { **a != 4 })
            .count();
        assert_eq!(mismatched, 0, "{what}: argmax");
        // the GPU shape of the same pass: one invocation per (pooled pixel, channel)
        let fwd_gpu = run_kernel(
            ctx,
            &pipes,
            Kernel::Conv2dReluMaxPool2ForwardGpu,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (1, Buf::In(f32s(&x))),
                (2, Buf::In(f32s(&kern))),
                (3, Buf::In(f32s(&bias))),
                (4, Buf::Out(n_pool)),
                (11, Buf::Out(n_pool)),
            ],
            (
                (pd.out_h() * pd.out_w() * oc).div_ceil(256) as u32,
                b as u32,
                1,
            ),
        );
        assert_close64(
            &format!("{what} pooled (GPU shape)"),
            &f64s(&fwd_gpu[0]),
            &want_y,
            1e-5,
            1e-5,
        );
        let arg_gpu: Vec<u32> = bytemuck::pod_collect_to_vec(&fwd_gpu[1]);
        assert_eq!(arg_gpu, arg, "{what}: argmax (GPU shape)");

        // backward through the pool: the weight gradient and the input gradient read the pool's gradient
        let dpool = rand_vec(&mut rng, n_pool, 1.0);
        let pooled_y: Vec<f32> = want_y.iter().map(|&v| v as f32).collect();
        let gated: Vec<f64> = dpool
            .iter()
            .zip(&want_y)
            .map(|(&g, &y)| if y > 0.0 { g as f64 } else { 0.0 })
            .collect();
        let dconv = r::maxpool_backward(&pd, &want_arg, &gated);
        let (want_dk, want_db, want_dx) =
            r::conv2d_backward(&d, &to64(&x), &to64(&kern), &conv_y, &dconv, false);
        let kkc = k * k * ic;
        // the gradients read the fused forward's own choices
        let argb = arg.clone();
        // the pooled weight gradient chunks pooled rows
        let pp = U::ConvParams {
            rows_per: rows_per as u32,
            chunks: (b * (d.out_h / 2).div_ceil(rows_per)) as u32,
            ..p
        };
        let partials = run_kernel(
            ctx,
            &pipes,
            Kernel::Conv2dWeightPartialsPooled,
            false,
            0,
            bytemuck::bytes_of(&pp),
            &[
                (1, Buf::In(f32s(&x))),
                (5, Buf::In(f32s(&dpool))),
                (9, Buf::Out(p.chunks as usize * (kkc + 1) * oc)),
                (10, Buf::In(bytemuck::cast_slice(&taps))),
                (11, Buf::In(bytemuck::cast_slice(&argb))),
            ],
            (
                (pp.chunks as usize).div_ceil(64) as u32,
                (kkc + 1).div_ceil(clampnet::train::POOLED_WEIGHT_GRAD_TILE.0) as u32,
                oc.div_ceil(clampnet::train::POOLED_WEIGHT_GRAD_TILE.1 as usize) as u32,
            ),
        );
        check_reduced(
            ctx,
            &pipes,
            Kernel::Conv2dWeightReduce,
            &pp,
            &partials[0],
            (&want_dk, &want_db),
            &what,
        );
        // the GPU shapes: chunks of pooled positions (as the trainer sizes them, and 8 per chunk), a
        // workgroup per (chunk, 10 patch rows, 32 channels), then the lane-parallel reduce
        let positions = b * (d.out_h / 2) * (d.out_w / 2);
        for (chunk_len, chunks) in [
            clampnet::train::pooled_chunks_gpu(positions),
            (8, positions.div_ceil(8) as u32),
        ] {
            let pg = U::ConvParams {
                chunk_len,
                chunks,
                ..p
            };
            let partials = run_kernel(
                ctx,
                &pipes,
                Kernel::Conv2dWeightPartialsPooledGpu,
                false,
                0,
                bytemuck::bytes_of(&pg),
                &[
                    (1, Buf::In(f32s(&x))),
                    (5, Buf::In(f32s(&dpool))),
                    (9, Buf::Out(chunks as usize * (kkc + 1) * oc)),
                    (10, Buf::In(bytemuck::cast_slice(&taps))),
                    (11, Buf::In(bytemuck::cast_slice(&argb))),
                ],
                (
                    chunks,
                    (kkc + 1).div_ceil(clampnet::train::POOLED_WEIGHT_GRAD_TILE.0) as u32,
                    oc.div_ceil(32) as u32,
                ),
            );
            let what = format!("{what} GPU shape, {chunks} chunks of {chunk_len}");
            check_reduced(
                ctx,
                &pipes,
                Kernel::Conv2dWeightReduceGpu,
                &pg,
                &partials[0],
                (&want_dk, &want_db),
                &what,
            );
        }
        let dx = run_kernel(
            ctx,
            &pipes,
            Kernel::Conv2dBackwardInputPooled,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[
                (2, Buf::In(f32s(&kern))),
                (4, Buf::In(f32s(&pooled_y))),
                (5, Buf::In(f32s(&dpool))),
                (8, Buf::Out(x.len())),
                (11, Buf::In(bytemuck::cast_slice(&argb))),
            ],
            ((h * w).div_ceil(64) as u32, b as u32, 1),
        );
        assert_close64(&format!("{what} dx"), &f64s(&dx[0]), &want_dx, 1e-5, 1e-5);
    }
}
