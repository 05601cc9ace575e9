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
        let labels: Vec<u32> = (0..batch).map(|_| rng.next_u32() % classes as u32).collect();
        let p = U::LossParams { batch: batch as u32, classes: classes as u32, advance: 0, _pad: 0 };
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::SoftmaxXent,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[(1, Buf::In(f32s(&logits))), (2, Buf::In(bytemuck::cast_slice(&labels))), (3, Buf::Out(batch * classes)), (4, Buf::Out(batch * 2))],
            (batch.div_ceil(64) as u32, 1, 1),
        );
        let (ce, dl, correct) = r::softmax_xent(batch, classes, &to64(&logits), &labels);
        let per = to_f32(&out[1]);
        let ce_gpu: Vec<f32> = per.iter().step_by(2).copied().collect();
        let ok_gpu: Vec<f32> = per.iter().skip(1).step_by(2).copied().collect();
        // f32 logsumexp: a few ulp of the largest logit
        assert_close64("cross-entropy", &ce_gpu.iter().map(|&v| v as f64).collect::<Vec<_>>(), &ce, 1e-6 * scale as f64, 1e-6);
        assert_close64("dlogits", &to_f32(&out[0]).iter().map(|&v| v as f64).collect::<Vec<_>>(), &dl, 1e-7, 1e-5);
        assert_eq!(ok_gpu, correct.iter().map(|&c| c as u8 as f32).collect::<Vec<_>>());
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
const CONV_CASES: [(usize, usize, usize, usize, usize, usize, bool, bool, usize); 5] = [
    (3, 28, 28, 1, 32, 3, false, true, 4),   // the reference layer
    (2, 9, 7, 3, 5, 3, true, true, 2),       // RGB, same padding, 5 channels (not a multiple of 8)
    (3, 6, 5, 4, 11, 2, false, false, 3),    // even kernel, linear, 11 channels
    (1, 5, 9, 2, 9, 5, true, true, 5),       // 5x5 same
    (2, 7, 7, 1, 1, 1, false, true, 1),      // 1x1 kernel, one filter
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
            &[(1, Buf::In(f32s(&x))), (2, Buf::In(f32s(&kern))), (3, Buf::In(f32s(&bias))), (4, Buf::Out(b * d.out_h * d.out_w * oc))],
            ((d.out_h * d.out_w).div_ceil(256) as u32, b as u32, oc.div_ceil(8) as u32),
        );
        let want = r::conv2d_forward(&d, &to64(&x), &to64(&kern), &to64(&bias), relu);
        assert_close64(&format!("conv forward {d:?}"), &to_f32(&out[0]).iter().map(|&v| v as f64).collect::<Vec<_>>(), &want, 1e-5, 1e-5);
    }
}

#[test]
fn dense_forward_matches_twin() {
    let (ctx, _g) = gpu();
    let pipes = Pipelines::new(ctx).unwrap();
    let mut rng = TestRng::new(3);
    for (batch, in_n, out_n, relu, xs) in [(5usize, 5408usize, 10usize, false, 3.0f32), (13, 37, 19, true, 1.0), (1, 3, 1, false, 1.0), (67, 129, 8, true, 1.0)] {
        let x = rand_vec(&mut rng, batch * in_n, xs);
        let kern = rand_vec(&mut rng, in_n * out_n, 0.1);
        let bias = rand_vec(&mut rng, out_n, 0.3);
        let p = U::DenseParams { batch: batch as u32, in_n: in_n as u32, out_n: out_n as u32, relu: relu as u32 };
        let out = run_kernel(
            ctx,
            &pipes,
            Kernel::DenseForward,
            false,
            0,
            bytemuck::bytes_of(&p),
            &[(1, Buf::In(f32s(&x))), (2, Buf::In(f32s(&kern))), (3, Buf::In(f32s(&bias))), (4, Buf::Out(batch * out_n))],
            (batch.div_ceil(256) as u32, out_n.div_ceil(8) as u32, 1),
        );
        let want = r::dense_forward(batch, in_n, out_n, &to64(&x), &to64(&kern), &to64(&bias), relu);
        assert_close64(&format!("dense forward {batch}x{in_n}x{out_n}"), &to_f32(&out[0]).iter().map(|&v| v as f64).collect::<Vec<_>>(), &want, 2e-6, 2e-6);
    }
}
