// Dense: y = act(x @ W + b), Keras layouts.
//   x [B, IN], W [IN, OUT], b [OUT], y [B, OUT], dy [B, OUT], dx [B, IN]
// For CPU adapters the forward is split over the inputs (dense_forward: partial sums per chunk of
// inputs; dense_forward_reduce: bias + activation); for GPUs the `_gpu` entry points at the end of the
// file do it in one pass (KernelSet in src/gpu/context.rs; each op in src/layers/ picks its kernels by
// it). Softmax on the last layer is not applied here: the layer emits logits and loss.wgsl fuses
// softmax + cross-entropy, as Keras does when it computes the loss from logits.
// Backward fuses relu'(y) (relu'(0) = 0); every gradient element is written by one invocation.
// CPU shapes: invocations handle 8 (forward) or 16 (backward) outputs at a time in vec4 registers, so that W
// (forward) and dy (backward) are read at addresses uniform across the workgroup; the backward reads dy
// through a uniform window where it fits (the DY_UNIFORM variants).

struct DenseParams {
    batch: u32, in_n: u32, out_n: u32, relu: u32,
    chunk: u32, chunks: u32, _pad0: u32, _pad1: u32,   // forward split-K: inputs per chunk, chunk count
}

@group(0) @binding(0) var<uniform> P: DenseParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> kernel: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dkernel: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;
@group(0) @binding(9) var<storage, read_write> partials: array<f32>;   // forward: [chunks, B, OUT]
// dy again, as a 64 KiB uniform window (the DY_UNIFORM variants, when B * OUT fits): the backward
// kernels read dy at addresses uniform across the workgroup, and on llvmpipe a uniform load costs about
// a third of a storage load.
@group(0) @binding(13) var<uniform> dy_u: array<vec4<f32>, 4096>;
// dx again, four inputs per element: dense_backward_input4 (IN % 4 == 0) stores whole quads. llvmpipe runs
// every storage access as a loop over its 8 lanes, and a vec4 store (one loop for 4 values) costs about
// two scalar ones.
@group(0) @binding(14) var<storage, read_write> dx4: array<vec4<f32>>;
// x again, four inputs per element (the same buffer, bound twice, read-only): the X4 variants of the
// weight gradient load each example's 4 inputs as one quad (IN % 4 == 0).
@group(0) @binding(15) var<storage, read> xq: array<vec4<f32>>;
// W transposed, [OUT, IN] as input quads: written each step by dense_transpose4 for dense_forward4
@group(0) @binding(16) var<storage, read_write> wt: array<vec4<f32>>;

// GATE (pipeline-overridable, so the unused branch compiles away): the backward applies relu'(y).
override GATE: bool = false;
// DY_UNIFORM (pipeline-overridable): read dy from the uniform window `dy_u` instead of `dy`.
override DY_UNIFORM: bool = false;
// X4 (pipeline-overridable): the weight gradient reads x as quads through `xq` (IN % 4 == 0).
override X4: bool = false;
// OQ4 (pipeline-overridable): the CPU tiles' fourth output quad (outputs o0 + 12..15) is computed. False
// where OUT <= 12 (a 10-class classifier): that quad would only be clamped copies, never stored (the
// same stored sums, a quarter less work).
override OQ4: bool = true;

fn dy_at(i: u32) -> f32 {
    if (DY_UNIFORM) {
        return dy_u[i >> 2u][i & 3u];
    }
    return dy[i];
}

fn dpre(i: u32) -> f32 {
    if (GATE) {
        return select(0.0, dy_at(i), y[i] > 0.0);
    }
    return dy_at(i);
}

// 4 consecutive gated gradients from flat index b + o (indices clamped to the row's last, l)
fn dpre4(b: u32, o: u32, l: u32) -> vec4<f32> {
    return vec4<f32>(dpre(b + min(o, l)), dpre(b + min(o + 1u, l)), dpre(b + min(o + 2u, l)), dpre(b + min(o + 3u, l)));
}

// 16 consecutive gated gradients of row n starting at output o0 (indices clamped; extras unused)
fn dpre16(n: u32, o0: u32) -> array<vec4<f32>, 4> {
    let b = n * P.out_n;
    let l = P.out_n - 1u;
    var q3 = vec4<f32>(0.0);
    if (OQ4) {
        q3 = dpre4(b, o0 + 12u, l);
    }
    return array<vec4<f32>, 4>(dpre4(b, o0, l), dpre4(b, o0 + 4u, l), dpre4(b, o0 + 8u, l), q3);
}

// 4 consecutive kernel values from flat index b + o (indices clamped to the row's last, l)
fn kernel4(b: u32, o: u32, l: u32) -> vec4<f32> {
    return vec4<f32>(kernel[b + min(o, l)], kernel[b + min(o + 1u, l)], kernel[b + min(o + 2u, l)], kernel[b + min(o + 3u, l)]);
}

// 16 consecutive values of kernel row i starting at o0 (indices clamped; extras unused)
fn kernel16(i: u32, o0: u32) -> array<vec4<f32>, 4> {
    let b = i * P.out_n;
    let l = P.out_n - 1u;
    var q3 = vec4<f32>(0.0);
    if (OQ4) {
        q3 = kernel4(b, o0 + 12u, l);
    }
    return array<vec4<f32>, 4>(kernel4(b, o0, l), kernel4(b, o0 + 4u, l), kernel4(b, o0 + 8u, l), q3);
}

// Store 8 outputs of row-major [rows, OUT] matrices (outputs past OUT are dropped). Two copies because
// core WGSL cannot pass storage pointers to functions.
fn store8_dkernel(at: u32, o0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    for (var q = 0u; q < 4u; q++) {
        if (o0 + q < P.out_n) {
            dkernel[at + q] = lo[q];
        }
        if (o0 + 4u + q < P.out_n) {
            dkernel[at + 4u + q] = hi[q];
        }
    }
}

fn store8_partial(at: u32, o0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    for (var q = 0u; q < 4u; q++) {
        if (o0 + q < P.out_n) {
            partials[at + q] = lo[q];
        }
        if (o0 + 4u + q < P.out_n) {
            partials[at + 4u + q] = hi[q];
        }
    }
}


// Forward, split over the inputs (split-K) so that a small batch still fills the machine:
// grid (ceil(chunks/64), ceil(B/16), ceil(OUT/16)): one invocation per (chunk of `chunk` inputs, 16 examples,
// 16 outputs), two tiles of 8 examples (the second, `b`, in forward_input's layout) sharing W's loads;
// per input, 16 loads of x and 16 of W feed 256 multiply-adds. Partial sums, no bias.
@compute @workgroup_size(64)
fn dense_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.x * 64u + lid;
    let n0 = wg.y * 16u;
    let o0 = wg.z * 16u;
    if (c >= P.chunks) {
        return;
    }
    let nl = P.batch - 1u;
    let x0 = min(n0, nl) * P.in_n;
    let x1 = min(n0 + 1u, nl) * P.in_n;
    let x2 = min(n0 + 2u, nl) * P.in_n;
    let x3 = min(n0 + 3u, nl) * P.in_n;
    let x4 = min(n0 + 4u, nl) * P.in_n;
    let x5 = min(n0 + 5u, nl) * P.in_n;
    let x6 = min(n0 + 6u, nl) * P.in_n;
    let x7 = min(n0 + 7u, nl) * P.in_n;
    let y0 = min(n0 + 8u, nl) * P.in_n; let y1 = min(n0 + 9u, nl) * P.in_n;
    let y2 = min(n0 + 10u, nl) * P.in_n; let y3 = min(n0 + 11u, nl) * P.in_n;
    let y4 = min(n0 + 12u, nl) * P.in_n; let y5 = min(n0 + 13u, nl) * P.in_n;
    let y6 = min(n0 + 14u, nl) * P.in_n; let y7 = min(n0 + 15u, nl) * P.in_n;
    let z = vec4<f32>(0.0);
    var a00 = z; var a01 = z; var a02 = z; var a03 = z;
    var a10 = z; var a11 = z; var a12 = z; var a13 = z;
    var a20 = z; var a21 = z; var a22 = z; var a23 = z;
    var a30 = z; var a31 = z; var a32 = z; var a33 = z;
    var a40 = z; var a41 = z; var a42 = z; var a43 = z;
    var a50 = z; var a51 = z; var a52 = z; var a53 = z;
    var a60 = z; var a61 = z; var a62 = z; var a63 = z;
    var a70 = z; var a71 = z; var a72 = z; var a73 = z;
    var b: array<vec4<f32>, 32>;   // examples n0 + 8..15
    let end = min((c + 1u) * P.chunk, P.in_n);
    for (var i = c * P.chunk; i < end; i++) {
        let k = kernel16(i, o0);
        let v = vec4<f32>(x[x0 + i], x[x1 + i], x[x2 + i], x[x3 + i]);
        let u = vec4<f32>(x[x4 + i], x[x5 + i], x[x6 + i], x[x7 + i]);
        forward_input(&b, array<f32, 8>(x[y0 + i], x[y1 + i], x[y2 + i], x[y3 + i], x[y4 + i], x[y5 + i], x[y6 + i],
                                        x[y7 + i]), k);
        a00 += v.x * k[0]; a01 += v.x * k[1]; a02 += v.x * k[2]; if (OQ4) { a03 += v.x * k[3]; }
        a10 += v.y * k[0]; a11 += v.y * k[1]; a12 += v.y * k[2]; if (OQ4) { a13 += v.y * k[3]; }
        a20 += v.z * k[0]; a21 += v.z * k[1]; a22 += v.z * k[2]; if (OQ4) { a23 += v.z * k[3]; }
        a30 += v.w * k[0]; a31 += v.w * k[1]; a32 += v.w * k[2]; if (OQ4) { a33 += v.w * k[3]; }
        a40 += u.x * k[0]; a41 += u.x * k[1]; a42 += u.x * k[2]; if (OQ4) { a43 += u.x * k[3]; }
        a50 += u.y * k[0]; a51 += u.y * k[1]; a52 += u.y * k[2]; if (OQ4) { a53 += u.y * k[3]; }
        a60 += u.z * k[0]; a61 += u.z * k[1]; a62 += u.z * k[2]; if (OQ4) { a63 += u.z * k[3]; }
        a70 += u.w * k[0]; a71 += u.w * k[1]; a72 += u.w * k[2]; if (OQ4) { a73 += u.w * k[3]; }
    }
    store_forward_tile(c, n0, o0, array<vec4<f32>, 32>(a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23,
        a30, a31, a32, a33, a40, a41, a42, a43, a50, a51, a52, a53, a60, a61, a62, a63, a70, a71, a72, a73));
    if (n0 + 8u < P.batch) {
        store_forward_tile(c, n0 + 8u, o0, b);
    }
}

// grid (ceil(OUT * IN / 4 / 64)): wt[o, i..i+3] = W[i..i+3, o], one input quad per invocation (IN % 4 == 0).
@compute @workgroup_size(64)
fn dense_transpose4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let e = (wg.y * nwg.x + wg.x) * 64u + lid;
    let quads = P.in_n / 4u;
    if (e >= P.out_n * quads) {
        return;
    }
    let o = e / quads;
    let i = (e % quads) * 4u;
    wt[e] = vec4<f32>(kernel[i * P.out_n + o], kernel[(i + 1u) * P.out_n + o], kernel[(i + 2u) * P.out_n + o],
                      kernel[(i + 3u) * P.out_n + o]);
}

// dense_forward where IN % 4 == 0 (the chunk is a multiple of 4): the same tile (8 examples x 16
// outputs) and the same sums in the same order, reading 4 inputs at a time as quads, x through `xq` and
// W through its transpose `wt`: 24 loads per 4 inputs where dense_forward makes 96 (llvmpipe runs every
// storage load lane by lane).
@compute @workgroup_size(64)
fn dense_forward4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.x * 64u + lid;
    let n0 = wg.y * 8u;
    let o0 = wg.z * 16u;
    if (c >= P.chunks) {
        return;
    }
    let nl = P.batch - 1u;
    let rq = P.in_n / 4u;   // quads per row of x and of wt
    let x0 = min(n0, nl) * rq; let x1 = min(n0 + 1u, nl) * rq;
    let x2 = min(n0 + 2u, nl) * rq; let x3 = min(n0 + 3u, nl) * rq;
    let x4 = min(n0 + 4u, nl) * rq; let x5 = min(n0 + 5u, nl) * rq;
    let x6 = min(n0 + 6u, nl) * rq; let x7 = min(n0 + 7u, nl) * rq;
    // wt rows of the 16 outputs (clamped to the last: the extras are not stored)
    let ol = P.out_n - 1u;
    let t0 = min(o0, ol) * rq; let t1 = min(o0 + 1u, ol) * rq; let t2 = min(o0 + 2u, ol) * rq;
    let t3 = min(o0 + 3u, ol) * rq; let t4 = min(o0 + 4u, ol) * rq; let t5 = min(o0 + 5u, ol) * rq;
    let t6 = min(o0 + 6u, ol) * rq; let t7 = min(o0 + 7u, ol) * rq; let t8 = min(o0 + 8u, ol) * rq;
    let t9 = min(o0 + 9u, ol) * rq; let t10 = min(o0 + 10u, ol) * rq; let t11 = min(o0 + 11u, ol) * rq;
    let t12 = min(o0 + 12u, ol) * rq; let t13 = min(o0 + 13u, ol) * rq; let t14 = min(o0 + 14u, ol) * rq;
    let t15 = min(o0 + 15u, ol) * rq;
    var a: array<vec4<f32>, 32>;   // example k x output quad q at k * 4 + q
    let end = min((c + 1u) * P.chunk, P.in_n) / 4u;
    for (var i = c * P.chunk / 4u; i < end; i++) {
        let v0 = xq[x0 + i]; let v1 = xq[x1 + i]; let v2 = xq[x2 + i]; let v3 = xq[x3 + i];
        let v4 = xq[x4 + i]; let v5 = xq[x5 + i]; let v6 = xq[x6 + i]; let v7 = xq[x7 + i];
        let w0 = wt[t0 + i]; let w1 = wt[t1 + i]; let w2 = wt[t2 + i]; let w3 = wt[t3 + i];
        let w4 = wt[t4 + i]; let w5 = wt[t5 + i]; let w6 = wt[t6 + i]; let w7 = wt[t7 + i];
        let w8 = wt[t8 + i]; let w9 = wt[t9 + i]; let w10 = wt[t10 + i]; let w11 = wt[t11 + i];
        let w12 = wt[t12 + i]; let w13 = wt[t13 + i]; let w14 = wt[t14 + i]; let w15 = wt[t15 + i];
        forward_input(&a, array<f32, 8>(v0.x, v1.x, v2.x, v3.x, v4.x, v5.x, v6.x, v7.x),
                      array<vec4<f32>, 4>(vec4<f32>(w0.x, w1.x, w2.x, w3.x), vec4<f32>(w4.x, w5.x, w6.x, w7.x),
                                          vec4<f32>(w8.x, w9.x, w10.x, w11.x), vec4<f32>(w12.x, w13.x, w14.x, w15.x)));
        forward_input(&a, array<f32, 8>(v0.y, v1.y, v2.y, v3.y, v4.y, v5.y, v6.y, v7.y),
                      array<vec4<f32>, 4>(vec4<f32>(w0.y, w1.y, w2.y, w3.y), vec4<f32>(w4.y, w5.y, w6.y, w7.y),
                                          vec4<f32>(w8.y, w9.y, w10.y, w11.y), vec4<f32>(w12.y, w13.y, w14.y, w15.y)));
        forward_input(&a, array<f32, 8>(v0.z, v1.z, v2.z, v3.z, v4.z, v5.z, v6.z, v7.z),
                      array<vec4<f32>, 4>(vec4<f32>(w0.z, w1.z, w2.z, w3.z), vec4<f32>(w4.z, w5.z, w6.z, w7.z),
                                          vec4<f32>(w8.z, w9.z, w10.z, w11.z), vec4<f32>(w12.z, w13.z, w14.z, w15.z)));
        forward_input(&a, array<f32, 8>(v0.w, v1.w, v2.w, v3.w, v4.w, v5.w, v6.w, v7.w),
                      array<vec4<f32>, 4>(vec4<f32>(w0.w, w1.w, w2.w, w3.w), vec4<f32>(w4.w, w5.w, w6.w, w7.w),
                                          vec4<f32>(w8.w, w9.w, w10.w, w11.w), vec4<f32>(w12.w, w13.w, w14.w, w15.w)));
    }
    store_forward_tile(c, n0, o0, a);
}

// One input's products for 8 examples (v) and 16 outputs (k: 4 quads), added to the tile in dense_forward's
// order: example k's output quad q at k * 4 + q.
fn forward_input(a: ptr<function, array<vec4<f32>, 32>>, v: array<f32, 8>, k: array<vec4<f32>, 4>) {
    (*a)[0] += v[0] * k[0]; (*a)[1] += v[0] * k[1]; (*a)[2] += v[0] * k[2]; if (OQ4) { (*a)[3] += v[0] * k[3]; }
    (*a)[4] += v[1] * k[0]; (*a)[5] += v[1] * k[1]; (*a)[6] += v[1] * k[2]; if (OQ4) { (*a)[7] += v[1] * k[3]; }
    (*a)[8] += v[2] * k[0]; (*a)[9] += v[2] * k[1]; (*a)[10] += v[2] * k[2]; if (OQ4) { (*a)[11] += v[2] * k[3]; }
    (*a)[12] += v[3] * k[0]; (*a)[13] += v[3] * k[1]; (*a)[14] += v[3] * k[2]; if (OQ4) { (*a)[15] += v[3] * k[3]; }
    (*a)[16] += v[4] * k[0]; (*a)[17] += v[4] * k[1]; (*a)[18] += v[4] * k[2]; if (OQ4) { (*a)[19] += v[4] * k[3]; }
    (*a)[20] += v[5] * k[0]; (*a)[21] += v[5] * k[1]; (*a)[22] += v[5] * k[2]; if (OQ4) { (*a)[23] += v[5] * k[3]; }
    (*a)[24] += v[6] * k[0]; (*a)[25] += v[6] * k[1]; (*a)[26] += v[6] * k[2]; if (OQ4) { (*a)[27] += v[6] * k[3]; }
    (*a)[28] += v[7] * k[0]; (*a)[29] += v[7] * k[1]; (*a)[30] += v[7] * k[2]; if (OQ4) { (*a)[31] += v[7] * k[3]; }
}

// The forward tile's partial sums of chunk c (example n0 + k's output quad q at k * 4 + q); rows past the
// batch are not stored.
fn store_forward_tile(c: u32, n0: u32, o0: u32, a: array<vec4<f32>, 32>) {
    let base = c * P.batch * P.out_n;
    store16_partial(base + (n0) * P.out_n + o0, o0, a[0], a[1], a[2], a[3]);
    if (n0 + 1u < P.batch) { store16_partial(base + (n0 + 1u) * P.out_n + o0, o0, a[4], a[5], a[6], a[7]); }
    if (n0 + 2u < P.batch) { store16_partial(base + (n0 + 2u) * P.out_n + o0, o0, a[8], a[9], a[10], a[11]); }
    if (n0 + 3u < P.batch) { store16_partial(base + (n0 + 3u) * P.out_n + o0, o0, a[12], a[13], a[14], a[15]); }
    if (n0 + 4u < P.batch) { store16_partial(base + (n0 + 4u) * P.out_n + o0, o0, a[16], a[17], a[18], a[19]); }
    if (n0 + 5u < P.batch) { store16_partial(base + (n0 + 5u) * P.out_n + o0, o0, a[20], a[21], a[22], a[23]); }
    if (n0 + 6u < P.batch) { store16_partial(base + (n0 + 6u) * P.out_n + o0, o0, a[24], a[25], a[26], a[27]); }
    if (n0 + 7u < P.batch) { store16_partial(base + (n0 + 7u) * P.out_n + o0, o0, a[28], a[29], a[30], a[31]); }
}

fn store16_partial(at: u32, o0: u32, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>) {
    store8_partial(at, o0, q0, q1);
    store8_partial(at + 8u, o0 + 8u, q2, q3);
}

// grid (ceil(B*OUT/64)): y[n, o] = act(b[o] + sum over chunks of the partial sums), chunks in order.
@compute @workgroup_size(64)
fn dense_forward_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let e = (wg.y * nwg.x + wg.x) * 64u + lid;
    let total = P.batch * P.out_n;
    if (e >= total) {
        return;
    }
    y[e] = reduced_output(e, total);
}

// act(b[o] + the chunks' partial sums of output element e, in chunk order)
fn reduced_output(e: u32, total: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < P.chunks; c++) {
        s += partials[c * total + e];
    }
    var r = bias[e % P.out_n] + s;
    if (P.relu != 0u) {
        r = max(r, 0.0);
    }
    return r;
}

// grid (ceil(IN/256), ceil(OUT/16)): one invocation per (4 input rows, 16 outputs):
// dW[i, o] = sum over n of x[n, i] * dpre[n, o]; per example 4 loads of x and 16 gradients feed 64 FMAs.
@compute @workgroup_size(64)
fn dense_backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = (wg.x * 64u + lid) * 4u;
    let o0 = wg.y * 16u;
    if (i0 >= P.in_n) {
        return;
    }
    let il = P.in_n - 1u;
    let c = vec3<u32>(min(i0 + 1u, il), min(i0 + 2u, il), min(i0 + 3u, il));
    // input row r (i0 + r) x output quad q at r * 4 + q
    var a: array<vec4<f32>, 16>;
    // four examples per trip: llvmpipe masks (and spills) a loop-carried value once per assignment, and
    // folds the consecutive ones of a trip into one; the same sums in the same order
    var n = 0u;
    for (; n + 4u <= P.batch; n += 4u) {
        weight_step(&a, n, i0, o0, c);
        weight_step(&a, n + 1u, i0, o0, c);
        weight_step(&a, n + 2u, i0, o0, c);
        weight_step(&a, n + 3u, i0, o0, c);
    }
    for (; n < P.batch; n++) {
        weight_step(&a, n, i0, o0, c);
    }
    store16_dkernel(i0, o0, a[0], a[1], a[2], a[3]);
    if (i0 + 1u < P.in_n) { store16_dkernel(i0 + 1u, o0, a[4], a[5], a[6], a[7]); }
    if (i0 + 2u < P.in_n) { store16_dkernel(i0 + 2u, o0, a[8], a[9], a[10], a[11]); }
    if (i0 + 3u < P.in_n) { store16_dkernel(i0 + 3u, o0, a[12], a[13], a[14], a[15]); }
}

// Example n's contribution to the weight gradient of inputs i0..i0+3 (c: the clamped i0+1..i0+3), 16 outputs.
fn weight_step(a: ptr<function, array<vec4<f32>, 16>>, n: u32, i0: u32, o0: u32, c: vec3<u32>) {
    let g = dpre16(n, o0);
    let xb = n * P.in_n;
    var v: vec4<f32>;
    if (X4) {
        v = xq[(xb + i0) >> 2u];
    } else {
        v = vec4<f32>(x[xb + i0], x[xb + c.x], x[xb + c.y], x[xb + c.z]);
    }
    (*a)[0] += v.x * g[0]; (*a)[1] += v.x * g[1]; (*a)[2] += v.x * g[2]; if (OQ4) { (*a)[3] += v.x * g[3]; }
    (*a)[4] += v.y * g[0]; (*a)[5] += v.y * g[1]; (*a)[6] += v.y * g[2]; if (OQ4) { (*a)[7] += v.y * g[3]; }
    (*a)[8] += v.z * g[0]; (*a)[9] += v.z * g[1]; (*a)[10] += v.z * g[2]; if (OQ4) { (*a)[11] += v.z * g[3]; }
    (*a)[12] += v.w * g[0]; (*a)[13] += v.w * g[1]; (*a)[14] += v.w * g[2]; if (OQ4) { (*a)[15] += v.w * g[3]; }
}

// dense_backward_weight (X4) with 8 input rows per invocation (IN % 8 == 0), and the bias gradient:
// grid (ceil((IN / 8 + 1) / 64), ceil(OUT/16)). Each example's 16 gradients, which llvmpipe loads lane by
// lane, feed twice the products; the same sums in the same order. The invocation after the last rows
// sums the gradients alone (x taken as 1: the sums of dense_backward_bias) into dbias, which saves that
// kernel's dispatch (a fixed cost on llvmpipe of about 15 us).
@compute @workgroup_size(64)
fn dense_backward_weight8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lane = wg.x * 64u + lid;
    let rows8 = P.in_n / 8u;
    if (lane > rows8) {
        return;
    }
    let sums_bias = lane == rows8;
    let i0 = min(lane, rows8 - 1u) * 8u;   // the bias invocation loads the last rows' x, unused
    let o0 = wg.y * 16u;
    // input row r (i0 + r) x output quad q at r * 4 + q
    var a: array<vec4<f32>, 32>;
    var n = 0u;
    for (; n + 4u <= P.batch; n += 4u) {
        weight_step8(&a, n, i0, o0, sums_bias);
        weight_step8(&a, n + 1u, i0, o0, sums_bias);
        weight_step8(&a, n + 2u, i0, o0, sums_bias);
        weight_step8(&a, n + 3u, i0, o0, sums_bias);
    }
    for (; n < P.batch; n++) {
        weight_step8(&a, n, i0, o0, sums_bias);
    }
    if (sums_bias) {
        store8_dbias(o0, a[0], a[1]);
        store8_dbias(o0 + 8u, a[2], a[3]);
    } else {
        store16_dkernel(i0, o0, a[0], a[1], a[2], a[3]);
        if (i0 + 1u < P.in_n) { store16_dkernel(i0 + 1u, o0, a[4], a[5], a[6], a[7]); }
        if (i0 + 2u < P.in_n) { store16_dkernel(i0 + 2u, o0, a[8], a[9], a[10], a[11]); }
        if (i0 + 3u < P.in_n) { store16_dkernel(i0 + 3u, o0, a[12], a[13], a[14], a[15]); }
        if (i0 + 4u < P.in_n) { store16_dkernel(i0 + 4u, o0, a[16], a[17], a[18], a[19]); }
        if (i0 + 5u < P.in_n) { store16_dkernel(i0 + 5u, o0, a[20], a[21], a[22], a[23]); }
        if (i0 + 6u < P.in_n) { store16_dkernel(i0 + 6u, o0, a[24], a[25], a[26], a[27]); }
        if (i0 + 7u < P.in_n) { store16_dkernel(i0 + 7u, o0, a[28], a[29], a[30], a[31]); }
    }
}

// Example n's contribution to the weight gradient of inputs i0..i0+7 (two quads of x), 16 outputs; with
// `sums_bias`, row 0's x is 1 and the others' 0.
fn weight_step8(a: ptr<function, array<vec4<f32>, 32>>, n: u32, i0: u32, o0: u32, sums_bias: bool) {
    let g = dpre16(n, o0);
    let xb = (n * P.in_n + i0) >> 2u;
    let v = select(xq[xb], vec4<f32>(1.0, 0.0, 0.0, 0.0), sums_bias);
    let u = select(xq[xb + 1u], vec4<f32>(0.0), sums_bias);
    (*a)[0] += v.x * g[0]; (*a)[1] += v.x * g[1]; (*a)[2] += v.x * g[2]; if (OQ4) { (*a)[3] += v.x * g[3]; }
    (*a)[4] += v.y * g[0]; (*a)[5] += v.y * g[1]; (*a)[6] += v.y * g[2]; if (OQ4) { (*a)[7] += v.y * g[3]; }
    (*a)[8] += v.z * g[0]; (*a)[9] += v.z * g[1]; (*a)[10] += v.z * g[2]; if (OQ4) { (*a)[11] += v.z * g[3]; }
    (*a)[12] += v.w * g[0]; (*a)[13] += v.w * g[1]; (*a)[14] += v.w * g[2]; if (OQ4) { (*a)[15] += v.w * g[3]; }
    (*a)[16] += u.x * g[0]; (*a)[17] += u.x * g[1]; (*a)[18] += u.x * g[2]; if (OQ4) { (*a)[19] += u.x * g[3]; }
    (*a)[20] += u.y * g[0]; (*a)[21] += u.y * g[1]; (*a)[22] += u.y * g[2]; if (OQ4) { (*a)[23] += u.y * g[3]; }
    (*a)[24] += u.z * g[0]; (*a)[25] += u.z * g[1]; (*a)[26] += u.z * g[2]; if (OQ4) { (*a)[27] += u.z * g[3]; }
    (*a)[28] += u.w * g[0]; (*a)[29] += u.w * g[1]; (*a)[30] += u.w * g[2]; if (OQ4) { (*a)[31] += u.w * g[3]; }
}

// Store 8 bias gradients from output o0 (outputs past OUT are dropped).
fn store8_dbias(o0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    for (var q = 0u; q < 4u; q++) {
        if (o0 + q < P.out_n) {
            dbias[o0 + q] = lo[q];
        }
        if (o0 + 4u + q < P.out_n) {
            dbias[o0 + 4u + q] = hi[q];
        }
    }
}

// Store 16 gradient values of kernel row i from output o0 (outputs past OUT are dropped).
fn store16_dkernel(i: u32, o0: u32, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>) {
    let at = i * P.out_n + o0;
    store8_dkernel(at, o0, q0, q1);
    store8_dkernel(at + 8u, o0 + 8u, q2, q3);
}

// grid (ceil(OUT/64)): db[o] = sum over n of dpre[n, o]
@compute @workgroup_size(64)
fn dense_backward_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wg.x * 64u + lid;
    if (o >= P.out_n) {
        return;
    }
    var acc = 0.0;
    for (var n = 0u; n < P.batch; n++) {
        acc += dpre(n * P.out_n + o);
    }
    dbias[o] = acc;
}

// grid (ceil(IN/256)): one invocation per 4 input columns, all examples, W rows held 16 outputs at a
// time: dx[n, i] = sum over o of W[i, o] * dpre[n, o]; per example 16 gradients feed 64 FMAs.
// dense_backward_input writes the sums over the first 16 outputs; dense_backward_input_rest (dispatched
// only when OUT > 16) adds those of the others. Two entry points, not a runtime branch: llvmpipe runs both
// sides of a branch, and the read-modify-write side cost a quarter of this kernel.
@compute @workgroup_size(64)
fn dense_backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = (wg.x * 64u + lid) * 4u;
    if (i0 >= P.in_n) {
        return;
    }
    input_pass(i0, 0u, true);
}

// dense_backward_input where IN % 4 == 0: each example's 4 sums stored as one quad (128 stores per
// invocation at batch 128 instead of 512: 0.91 -> 0.78 ms per step there).
@compute @workgroup_size(64)
fn dense_backward_input4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = (wg.x * 64u + lid) * 4u;
    if (i0 >= P.in_n) {
        return;
    }
    let w = input_weights(i0, 0u);
    for (var n = 0u; n < P.batch; n++) {
        dx4[(n * P.in_n + i0) >> 2u] = input_sums(w, n, 0u);
    }
}

// dense_backward_input4 with 8 input columns per invocation (IN % 8 == 0, OUT <= 16): grid
// (ceil(IN/512)). Each example's 16 gradients, which llvmpipe loads lane by lane, feed twice the
// products; the same sums.
@compute @workgroup_size(64)
fn dense_backward_input8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = (wg.x * 64u + lid) * 8u;
    if (i0 >= P.in_n) {
        return;
    }
    let w = input_weights(i0, 0u);
    let v = input_weights(i0 + 4u, 0u);
    for (var n = 0u; n < P.batch; n++) {
        let g = masked_dpre16(n, 0u);
        let at = (n * P.in_n + i0) >> 2u;
        dx4[at] = input_sums_g(w, g);
        dx4[at + 1u] = input_sums_g(v, g);
    }
}

@compute @workgroup_size(64)
fn dense_backward_input_rest(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i0 = (wg.x * 64u + lid) * 4u;
    if (i0 >= P.in_n) {
        return;
    }
    for (var o0 = 16u; o0 < P.out_n; o0 += 16u) {
        input_pass(i0, o0, false);
    }
}

// Outputs o0..o0+15 of dx for input columns i0..i0+3: stored when `first`, else added (a constant at each
// call, so the other side compiles away).
fn input_pass(i0: u32, o0: u32, first: bool) {
    let il = P.in_n - 1u;
    let w = input_weights(i0, o0);
    for (var n = 0u; n < P.batch; n++) {
        var acc = input_sums(w, n, o0);
        let at = n * P.in_n + i0;
        let c1 = min(i0 + 1u, il);
        let c2 = min(i0 + 2u, il);
        let c3 = min(i0 + 3u, il);
        if (!first) {
            acc += vec4<f32>(dx[at], dx[n * P.in_n + c1], dx[n * P.in_n + c2], dx[n * P.in_n + c3]);
        }
        dx[at] = acc.x;
        if (i0 + 1u < P.in_n) { dx[at + 1u] = acc.y; }
        if (i0 + 2u < P.in_n) { dx[at + 2u] = acc.z; }
        if (i0 + 3u < P.in_n) { dx[at + 3u] = acc.w; }
    }
}

// W rows i0..i0+3 (clamped to the last), outputs o0..o0+15: [row][output quad]
fn input_weights(i0: u32, o0: u32) -> array<array<vec4<f32>, 4>, 4> {
    let il = P.in_n - 1u;
    return array<array<vec4<f32>, 4>, 4>(kernel16(i0, o0), kernel16(min(i0 + 1u, il), o0),
                                         kernel16(min(i0 + 2u, il), o0), kernel16(min(i0 + 3u, il), o0));
}

// dx[n, i0..i0+3] over outputs o0..o0+15 (the clamped duplicates past OUT zeroed, so they add nothing)
fn input_sums(w: array<array<vec4<f32>, 4>, 4>, n: u32, o0: u32) -> vec4<f32> {
    return input_sums_g(w, masked_dpre16(n, o0));
}

// dpre16 with the outputs past OUT zeroed
fn masked_dpre16(n: u32, o0: u32) -> array<vec4<f32>, 4> {
    let m0 = vec4<f32>(vec4<u32>(o0, o0 + 1u, o0 + 2u, o0 + 3u) < vec4<u32>(P.out_n));
    let m1 = vec4<f32>(vec4<u32>(o0 + 4u, o0 + 5u, o0 + 6u, o0 + 7u) < vec4<u32>(P.out_n));
    let m2 = vec4<f32>(vec4<u32>(o0 + 8u, o0 + 9u, o0 + 10u, o0 + 11u) < vec4<u32>(P.out_n));
    let m3 = vec4<f32>(vec4<u32>(o0 + 12u, o0 + 13u, o0 + 14u, o0 + 15u) < vec4<u32>(P.out_n));
    let g = dpre16(n, o0);
    return array<vec4<f32>, 4>(g[0] * m0, g[1] * m1, g[2] * m2, g[3] * m3);
}

// 4 input columns' sums over 16 outputs: W rows w, masked gradients g
fn input_sums_g(w: array<array<vec4<f32>, 4>, 4>, g: array<vec4<f32>, 4>) -> vec4<f32> {
    var s = vec4<f32>(
        dot(w[0][0], g[0]) + dot(w[0][1], g[1]) + dot(w[0][2], g[2]),
        dot(w[1][0], g[0]) + dot(w[1][1], g[1]) + dot(w[1][2], g[2]),
        dot(w[2][0], g[0]) + dot(w[2][1], g[1]) + dot(w[2][2], g[2]),
        dot(w[3][0], g[0]) + dot(w[3][1], g[1]) + dot(w[3][2], g[2]));
    if (OQ4) {
        s += vec4<f32>(dot(w[0][3], g[3]), dot(w[1][3], g[3]), dot(w[2][3], g[3]), dot(w[3][3], g[3]));
    }
    return s;
}

// ---- GPU shapes (the kernel set for GPU adapters) ----
// The shapes above serve llvmpipe; on a GPU they leave a few thousand invocations each looping a long
// way (latency-bound) and need a separate reduce pass. These give the GPU many short invocations and
// sum across invocations in workgroup memory. dy is read from its storage binding only.

fn dpre_storage(i: u32) -> f32 {
    if (GATE) {
        return select(0.0, dy[i], y[i] > 0.0);
    }
    return dy[i];
}

// 256 invocations x 16 outputs (16 KiB, WebGPU's baseline workgroup-memory limit)
var<workgroup> dense_lanes: array<vec4<f32>, 1024>;

// grid (ceil(OUT/16), B): one workgroup of 256 per (example, 16 outputs). Every invocation sums every
// 256th input for the 16 outputs; a tree reduction in workgroup memory; bias + activation.
@compute @workgroup_size(256)
fn dense_forward_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o0 = wg.x * 16u;
    let n = wg.y;
    forward_gpu_sums(n, o0, lid);
    let o = o0 + lid;
    if (lid < 16u && o < P.out_n) {
        y[n * P.out_n + o] = forward_gpu_output(o0, o);
    }
}

// Example n's sums for outputs o0..o0 + 15, left in dense_lanes[0..4] (the workgroup's 256 invocations).
fn forward_gpu_sums(n: u32, o0: u32, lid: u32) {
    lanes_tree(forward_gpu_partial(n, o0, lid), lid);
}

// Invocation lid's share of example n's sums for outputs o0..o0 + 15: every 256th input from lid.
fn forward_gpu_partial(n: u32, o0: u32, lid: u32) -> array<vec4<f32>, 4> {
    var a = array<vec4<f32>, 4>();
    let xb = n * P.in_n;
    for (var i = lid; i < P.in_n; i += 256u) {
        let v = x[xb + i];
        let k = kernel16(i, o0);
        a[0] += v * k[0]; a[1] += v * k[1]; a[2] += v * k[2]; a[3] += v * k[3];
    }
    return a;
}

// The 256 invocations' shares a summed by a tree in workgroup memory, left in dense_lanes[0..4].
fn lanes_tree(a: array<vec4<f32>, 4>, lid: u32) {
    dense_lanes[lid * 4u] = a[0];
    dense_lanes[lid * 4u + 1u] = a[1];
    dense_lanes[lid * 4u + 2u] = a[2];
    dense_lanes[lid * 4u + 3u] = a[3];
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var q = 0u; q < 4u; q++) {
                dense_lanes[lid * 4u + q] += dense_lanes[(lid + s) * 4u + q];
            }
        }
        workgroupBarrier();
    }
}

// act(b[o] + the sum forward_gpu_sums left for output o)
fn forward_gpu_output(o0: u32, o: u32) -> f32 {
    let l = o - o0;
    let v = dense_lanes[l >> 2u][l & 3u] + bias[o];
    return select(v, max(v, 0.0), P.relu != 0u);
}

// grid (ceil((IN + 1) * OUT / 256)), folded: one invocation per element of the [IN + 1, OUT] gradient:
// dW[i, o] = sum_n x[n, i] dpre[n, o]; row IN is the bias gradient, sum_n dpre[n, o].
@compute @workgroup_size(256)
fn dense_backward_weight_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let e = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (e >= (P.in_n + 1u) * P.out_n) {
        return;
    }
    let i = e / P.out_n;
    let o = e % P.out_n;
    var s = 0.0;
    if (i < P.in_n) {
        for (var n = 0u; n < P.batch; n++) {
            s += x[n * P.in_n + i] * dpre_storage(n * P.out_n + o);
        }
        dkernel[e] = s;
    } else {
        for (var n = 0u; n < P.batch; n++) {
            s += dpre_storage(n * P.out_n + o);
        }
        dbias[o] = s;
    }
}

// grid (ceil(B * IN / 256)), folded: one invocation per (example, input): dx[n, i] = sum_o dpre[n, o] W[i, o].
@compute @workgroup_size(256)
fn dense_backward_input_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let e = (wg.y * nwg.x + wg.x) * 256u + lid;
    if (e >= P.batch * P.in_n) {
        return;
    }
    let n = e / P.in_n;
    let i = e % P.in_n;
    let kb = i * P.out_n;
    let db = n * P.out_n;
    var s = 0.0;
    for (var o = 0u; o < P.out_n; o++) {
        s += dpre_storage(db + o) * kernel[kb + o];
    }
    dx[e] = s;
}
