// Conv2D, square k x k kernel, stride S, padding `valid` (no zeros) or `same` (TensorFlow's: pad_h rows
// above and pad_w columns left, any extra one below and right), cross-correlation as Keras computes it:
// output (i, j) reads input rows i*S - pad_h + di and columns j*S - pad_w + dj. The fused conv + pool
// entry points are used only at stride 1 with equal padding on every side (`Conv2d::plain`). Layouts are Keras' own:
//   x  [B, IH, IW, IC]   NHWC input           K  [k, k, IC, OC]  kernel (row t = (di*k + dj)*IC + c)
//   b  [OC]              bias                 y  [B, OH, OW, OC] output after activation
// Forward fuses bias + activation. The backward kernels fuse the activation derivative:
// dpre = dy * relu'(y) with relu'(0) = 0 (y > 0 exactly when pre > 0), or dpre = dy when linear.
// Backward passes are gathers: no atomics.
//
// Two sets of shapes (KernelSet in src/gpu/context.rs; each op in src/layers/ picks its kernels by it).
// For CPU adapters (llvmpipe), the entry points below:
// every invocation loops over output channels, so kernel weights are loaded at addresses uniform across
// the workgroup; the batch index comes from the grid (workgroup_id.y), not from integer division;
// accumulators are vec4s with constant indices (registers, not scratch memory, on llvmpipe). For GPUs, the
// `_gpu` entry points at the end of the file (the fused conv + pool and its weight gradient): one
// invocation per output element, reductions in workgroup memory. The unfused entry points serve both.
//   conv2d_forward          one invocation per (4 output pixels, 8 output channels)
//   conv2d_weight_partials  one invocation per (chunk of output rows, 8 patch rows, 8 channels):
//                           partial sums of dK and db (the bias is patch row k*k*IC)
//   conv2d_weight_reduce    sums the partials of all chunks
//   conv2d_backward_input   one invocation per (input pixel, 16 input channels)
//   conv2d_relu_maxpool2_forward  conv + relu + 2x2 max-pool in one pass (the conv output is never stored);
//                           the weight and input gradients then read the pool's gradient (POOLED variants)

struct ConvParams {
    batch: u32, in_h: u32, in_w: u32, in_c: u32,
    out_h: u32, out_w: u32, out_c: u32, k: u32,
    pad_h: u32, relu: u32, rows_per: u32, chunks: u32,   // weight gradient: rows per chunk, chunks in all
    chunk_len: u32,   // GPU shape of the pooled weight gradient: pooled positions per chunk
    pad_w: u32, stride: u32, group: u32,   // group: the 3x3 one-channel forward's channel group
}

@group(0) @binding(0) var<uniform> P: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> kernel: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dkernel: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;
@group(0) @binding(9) var<storage, read_write> partials: array<f32>;   // [chunks, k*k*IC + 1, OC]
@group(0) @binding(10) var<storage, read> taps: array<vec4<i32>>;      // patch rows, padded to 8: (di, dj, offset, kind)
@group(0) @binding(11) var<storage, read_write> argmax: array<u32>;    // fused with a 2x2 max-pool: [B, OH/2, OW/2, OC]
// The kernel again, as a 64 KiB uniform window of the parameter buffer (the fused forward only; a model
// whose conv kernel is larger is not fused). On llvmpipe a uniform load costs about a third of a storage
// load (1.3 vs 3.5-4.4 ns per 8 lanes measured), which took this kernel from 3.8 to 2.6 ms per step.
@group(0) @binding(12) var<uniform> kernel_u: array<vec4<f32>, 4096>;
// `taps` again, as a uniform window (the fused forward, which loops over them: one flat loop over the
// taps costs llvmpipe far less than three nested loops over (di, dj, c): 2.6 -> 1.7 ms per step here).
@group(0) @binding(13) var<uniform> taps_u: array<vec4<i32>, 4096>;
// `y` and `argmax` again, four channels per element: the fused forward's OC4 entry point (OC % 4 == 0)
// stores whole channel quads. llvmpipe runs every storage access as a loop over the 8 lanes, and a vec4
// store, one such loop for 4 values, costs about two scalar ones: 16 quad stores per invocation instead
// of 64 scalar ones took this kernel from 3.43 to 2.79 ms per step at batch 128.
@group(0) @binding(14) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> argmax4: array<vec4<u32>>;
// x again, four values per element: the 3x3 single-channel fused forward loads its input patch as quads
@group(0) @binding(16) var<storage, read> x4: array<vec4<f32>>;
// The 3x3 one-channel forward's kernel and bias by 16-channel group, written each step by
// conv2d_group_kernel: group g at g * GROUP_STRIDE, tap t's 16 channels at t * 16, the bias at 144
// (channels past OC are 0). The forward reads its group through a uniform window bound at the group, so
// every index is a constant: llvmpipe loads a constant-offset uniform once for all 8 lanes, any other
// offset one lane at a time (it cannot tell a workgroup-uniform index from a divergent one).
@group(0) @binding(17) var<storage, read_write> kgroups: array<f32>;
const GROUP_STRIDE: u32 = 192u;
// The 3x3 one-channel weight gradient's quad views: the pool's gradient and the partial sums.
@group(0) @binding(18) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(19) var<storage, read_write> partials4: array<vec4<f32>>;   // 9 * 16 + 16 floats, rounded up to 768 bytes (3 x 256: window offsets)

// GATE (a pipeline-overridable constant, so the unused branch compiles away): the backward applies
// relu'(y) to dy itself. It is false when a max-pool follows, because the pool backward already did.
override GATE: bool = false;

// PACKED_ARGMAX (pipeline-overridable): the 3x3 one-channel forward and weight gradient keep the pool's
// choices packed, 3 bits per channel, 8 channels per word, the words of 32 channels one quad per pooled
// pixel (ceil(OC / 32) quads each) in `argmax4`: 1 store and 1 load per pixel where the per-channel
// layout has 8 (llvmpipe runs every storage access lane by lane). For a first layer only: the backward
// to the input reads the per-channel layout.
override PACKED_ARGMAX: bool = false;

// K3C1_GROUPS (pipeline-overridable, 1 or 2): 16-channel groups per invocation of the 3x3 one-channel
// forward. Two share the patch loads (the window then holds both groups).
override K3C1_GROUPS: u32 = 1u;

// POOLED (pipeline-overridable): this relu conv is fused with the 2x2 max-pool after it. The conv output is
// never stored: `y` is the pooled output, `dy` the pool's incoming gradient, `argmax` the pool's choice,
// and dL/dpre at conv position (i, j) is routed through the pool (relu' = pooled value > 0).
override POOLED: bool = false;

// dL/dpre at output element `at`.
fn dpre(at: u32) -> f32 {
    if (GATE) {
        return select(0.0, dy[at], y[at] > 0.0);
    }
    return dy[at];
}

// dL/dpre at conv output (n, i, j, o) when fused with the pool: the pool's gradient where (i, j) is the
// first maximum of its window and that maximum is > 0; 0 elsewhere and in rows/columns outside every window.
fn dpre_pooled(n: u32, i: u32, j: u32, o: u32) -> f32 {
    let ph = i / 2u;
    let pw = j / 2u;
    let out_ph = P.out_h / 2u;
    let out_pw = P.out_w / 2u;
    if (ph >= out_ph || pw >= out_pw) {
        return 0.0;
    }
    let at = ((n * out_ph + ph) * out_pw + pw) * P.out_c + o;
    let local = (i % 2u) * 2u + (j % 2u);
    return select(0.0, dy[at], argmax[at] == local);   // argmax is 4 where the pooled value is 0
}

// dL/dpre at conv output (n, i, j, o), whose flat index is at + o.
fn grad_at(n: u32, i: u32, j: u32, at: u32, o: u32) -> f32 {
    if (POOLED) {
        return dpre_pooled(n, i, j, o);
    }
    return dpre(at + o);
}

// Four consecutive kernel values of a row (reads past the row end only feed outputs that are not stored).
fn kernel4(at: u32) -> vec4<f32> {
    return vec4<f32>(kernel[at], kernel[at + 1u], kernel[at + 2u], kernel[at + 3u]);
}

// Four consecutive kernel values from the uniform window.
fn kernel4u(at: u32) -> vec4<f32> {
    return vec4<f32>(kernel_u[at >> 2u][at & 3u], kernel_u[(at + 1u) >> 2u][(at + 1u) & 3u],
                     kernel_u[(at + 2u) >> 2u][(at + 2u) & 3u], kernel_u[(at + 3u) >> 2u][(at + 3u) & 3u]);
}

fn bias4(o: u32) -> vec4<f32> {
    let last = P.out_c - 1u;
    return vec4<f32>(bias[min(o, last)], bias[min(o + 1u, last)], bias[min(o + 2u, last)], bias[min(o + 3u, last)]);
}

fn activate(v: vec4<f32>) -> vec4<f32> {
    return select(v, max(v, vec4<f32>(0.0)), P.relu != 0u);
}

// Store 8 channels of one output pixel (channels past OC are dropped).
fn store8(at: u32, o0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    for (var q = 0u; q < 4u; q++) {
        if (o0 + q < P.out_c) {
            y[at + q] = lo[q];
        }
        if (o0 + 4u + q < P.out_c) {
            y[at + 4u + q] = hi[q];
        }
    }
}

// x at `idx` if `ok`, else 0 (the padding); the clamped load is harmless when not ok.
fn xval(idx: i32, ok: bool) -> f32 {
    return select(0.0, x[u32(max(idx, 0))], ok);
}

// grid (ceil(OH*OW/256), B, ceil(OC/8)): one invocation per (4 consecutive output pixels, 8 output
// channels): each tap loads 4 inputs and 8 weights for 32 multiply-adds. No division in the loops.
@compute @workgroup_size(64)
fn conv2d_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p0 = (wg.x * 64u + lid) * 4u;
    let n = wg.y;
    let o0 = wg.z * 8u;
    let hw = P.out_h * P.out_w;
    if (p0 >= hw) {
        return;
    }
    // top-left input coordinate (may be negative with padding) and input offset of each pixel
    var ih: vec4<i32>;
    var iw: vec4<i32>;
    var base: vec4<i32>;
    for (var q = 0u; q < 4u; q++) {
        let p = min(p0 + q, hw - 1u);
        ih[q] = i32((p / P.out_w) * P.stride) - i32(P.pad_h);
        iw[q] = i32((p % P.out_w) * P.stride) - i32(P.pad_w);
        base[q] = ((i32(n * P.in_h) + ih[q]) * i32(P.in_w) + iw[q]) * i32(P.in_c);
    }
    let b0 = bias4(o0);
    let b1 = bias4(o0 + 4u);
    var a0 = b0; var a1 = b1; var a2 = b0; var a3 = b1;
    var a4 = b0; var a5 = b1; var a6 = b0; var a7 = b1;
    var t = 0u;
    for (var di = 0u; di < P.k; di++) {
        let hok = (ih + i32(di) >= vec4<i32>(0)) & (ih + i32(di) < vec4<i32>(i32(P.in_h)));
        for (var dj = 0u; dj < P.k; dj++) {
            let ok = hok & (iw + i32(dj) >= vec4<i32>(0)) & (iw + i32(dj) < vec4<i32>(i32(P.in_w)));
            let tap = i32((di * P.in_w + dj) * P.in_c);
            for (var c = 0u; c < P.in_c; c++) {
                let kb = t * P.out_c + o0;
                let k0 = kernel4(kb);
                let k1 = kernel4(kb + 4u);
                let off = tap + i32(c);
                let v = vec4<f32>(xval(base.x + off, ok.x), xval(base.y + off, ok.y),
                                  xval(base.z + off, ok.z), xval(base.w + off, ok.w));
                a0 += v.x * k0; a1 += v.x * k1;
                a2 += v.y * k0; a3 += v.y * k1;
                a4 += v.z * k0; a5 += v.z * k1;
                a6 += v.w * k0; a7 += v.w * k1;
                t++;
            }
        }
    }
    let out = (n * hw + p0) * P.out_c + o0;
    store8(out, o0, activate(a0), activate(a1));
    if (p0 + 1u < hw) { store8(out + P.out_c, o0, activate(a2), activate(a3)); }
    if (p0 + 2u < hw) { store8(out + 2u * P.out_c, o0, activate(a4), activate(a5)); }
    if (p0 + 3u < hw) { store8(out + 3u * P.out_c, o0, activate(a6), activate(a7)); }
}

// conv2d (relu) fused with the 2x2 max-pool after it.
// grid (ceil((OH/2) * ceil((OW/2)/2) / 32), B, ceil(OC/16)): one invocation per (2 horizontally adjacent
// pooled pixels, 16 channels); the 8 conv outputs of their windows are a register tile: per tap, 8 input
// loads and 16 weights feed 128 multiply-adds. Writes the pooled output (`y`) and the index
// (di * 2 + dj) of the first maximum of each window in row-major order (`argmax`), or 4 where the pooled
// value is 0 (relu' = 0: no position gets a gradient); the conv output itself is never stored.
// Workgroups of 32: the reference layer has 91 pairs per image, and llvmpipe still pays for idle lanes.
// Two entry points, the same tile (`pool_pair`): scalar stores (any OC) or channel quads (OC % 4 == 0).
@compute @workgroup_size(32)
fn conv2d_relu_maxpool2_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pair = wg.x * 32u + lid;
    let o0 = wg.z * 16u;
    let t = pool_pair(pair, wg.y, o0);
    if (!t.valid) {
        return;
    }
    let a = t.a;
    let o = t.out;
    let r = P.out_c;
    pool_store(o, o0, true, pool_max(a[0], a[4], a[8], a[12]));
    pool_store(o + 4u, o0 + 4u, true, pool_max(a[1], a[5], a[9], a[13]));
    pool_store(o + 8u, o0 + 8u, true, pool_max(a[2], a[6], a[10], a[14]));
    pool_store(o + 12u, o0 + 12u, true, pool_max(a[3], a[7], a[11], a[15]));
    pool_store(o + r, o0, t.second, pool_max(a[16], a[20], a[24], a[28]));
    pool_store(o + r + 4u, o0 + 4u, t.second, pool_max(a[17], a[21], a[25], a[29]));
    pool_store(o + r + 8u, o0 + 8u, t.second, pool_max(a[18], a[22], a[26], a[30]));
    pool_store(o + r + 12u, o0 + 12u, t.second, pool_max(a[19], a[23], a[27], a[31]));
}

@compute @workgroup_size(32)
fn conv2d_relu_maxpool2_forward_oc4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pair = wg.x * 32u + lid;
    let o0 = wg.z * 16u;
    let t = pool_pair(pair, wg.y, o0);
    if (!t.valid) {
        return;
    }
    store_pair4(t, o0);
}

// conv2d_relu_maxpool2_forward_oc4 for the commonest first layer: a 3x3 kernel over one input channel,
// valid padding, stride 1, IW % 4 == 0 (Fashion-MNIST's 28x28x1). The same tile and the same sums, in the
// same order (bit-identical), as straight-line code: the pair's 4x6 input patch is loaded once, as 8
// quads (the loop loads 72 values one lane at a time), and no statement runs inside a loop, so llvmpipe
// neither masks nor spills the accumulators on every multiply-add.
@compute @workgroup_size(32)
fn conv2d_relu_maxpool2_forward_k3c1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    let o0 = P.group * 16u;
    let out_ph = P.out_h / 2u;
    let out_pw = P.out_w / 2u;
    let pairs_per_row = (out_pw + 1u) / 2u;
    // No early return: llvmpipe runs the code after a return under an execution mask, and loads even a
    // uniform value (the kernel window) lane by lane there (20% of this kernel's time). Lanes past the
    // last pair compute the last pair again and store nothing.
    let live = wg.x * 32u + lid < out_ph * pairs_per_row;
    let pair = min(wg.x * 32u + lid, out_ph * pairs_per_row - 1u);
    let ph = pair / pairs_per_row;
    let pw = (pair % pairs_per_row) * 2u;
    let second = pw + 1u < out_pw;
    let o = (n * out_ph * out_pw + ph * out_pw + pw) * (P.out_c >> 2u) + (o0 >> 2u);   // quad index
    let r = P.out_c >> 2u;
    // patch rows 2ph..2ph+3, columns 2pw..2pw+5 (2pw is even and IW % 4 == 0: two aligned quads). A row's
    // last pair has one pixel (IW/2 - 1 pooled columns: odd) and reads a quad past the row, past the end
    // of x for the batch's last image: WebGPU clamps or zeroes such reads, and only the missing second
    // pixel would use those values.
    let at = ((n * P.in_h + 2u * ph) * P.in_w + 2u * pw) >> 2u;
    let row = P.in_w >> 2u;
    let r0 = patch_row(at);
    let r1 = patch_row(at + row);
    let r2 = patch_row(at + 2u * row);
    let r3 = patch_row(at + 3u * row);
    // the group's window: tap t's channel quad q is quad t * 4 + q, the bias quads 36..39
    let b0 = kernel_u[36]; let b1 = kernel_u[37]; let b2 = kernel_u[38]; let b3 = kernel_u[39];
    // the 8 conv positions: (row 0|1, column 0..3) of the pair's two windows, in PoolPair's order
    let w00 = window9(r0, r1, r2, 0u); let w01 = window9(r0, r1, r2, 1u);
    let w10 = window9(r1, r2, r3, 0u); let w11 = window9(r1, r2, r3, 1u);
    let w02 = window9(r0, r1, r2, 2u); let w03 = window9(r0, r1, r2, 3u);
    let w12 = window9(r1, r2, r3, 2u); let w13 = window9(r1, r2, r3, 3u);
    // per channel quad: the 8 conv values, pooled and stored at once (few values live at a time)
    let more = vec3<bool>(o0 + 4u < P.out_c, o0 + 8u < P.out_c, o0 + 12u < P.out_c);
    // each call returns its quad's choices packed, for the first and the second pixel
    let p0 = pool_quad(o, r, live, second, w00, w01, w10, w11, w02, w03, w12, w13, b0, 0u);
    let p1 = pool_quad(o + 1u, r, more.x && live, second, w00, w01, w10, w11, w02, w03, w12, w13, b1, 1u);
    let p2 = pool_quad(o + 2u, r, more.y && live, second, w00, w01, w10, w11, w02, w03, w12, w13, b2, 2u);
    let p3 = pool_quad(o + 3u, r, more.z && live, second, w00, w01, w10, w11, w02, w03, w12, w13, b3, 3u);
    var w2 = vec2<u32>(0u);
    var w3 = vec2<u32>(0u);
    if (K3C1_GROUPS == 2u) {
        // the next group (its window 48 quads on), from the same patch
        let more2 = vec4<bool>(o0 + 16u < P.out_c, o0 + 20u < P.out_c, o0 + 24u < P.out_c, o0 + 28u < P.out_c) &
                    vec4<bool>(live);
        let c0 = kernel_u[84]; let c1 = kernel_u[85]; let c2 = kernel_u[86]; let c3 = kernel_u[87];
        let p4 = pool_quad(o + 4u, r, more2.x, second, w00, w01, w10, w11, w02, w03, w12, w13, c0, 48u);
        let p5 = pool_quad(o + 5u, r, more2.y, second, w00, w01, w10, w11, w02, w03, w12, w13, c1, 49u);
        let p6 = pool_quad(o + 6u, r, more2.z, second, w00, w01, w10, w11, w02, w03, w12, w13, c2, 50u);
        let p7 = pool_quad(o + 7u, r, more2.w, second, w00, w01, w10, w11, w02, w03, w12, w13, c3, 51u);
        w2 = p4 | (p5 << vec2<u32>(12u));
        w3 = p6 | (p7 << vec2<u32>(12u));
    }
    if (PACKED_ARGMAX && live) {
        // this pass's groups (P.group even: the quad of groups P.group, P.group + 1)
        let w0 = p0 | (p1 << vec2<u32>(12u));
        let w1 = p2 | (p3 << vec2<u32>(12u));
        let at = (n * out_ph * out_pw + ph * out_pw + pw) * ((P.out_c + 31u) / 32u) + P.group / 2u;
        argmax4[at] = vec4<u32>(w0.x, w1.x, w2.x, w3.x);
        if (second) {
            argmax4[at + (P.out_c + 31u) / 32u] = vec4<u32>(w0.y, w1.y, w2.y, w3.y);
        }
    }
}

// 4 choices (0..4) in 12 bits, channel k at bit 3k
fn pack_choices(a: vec4<u32>) -> u32 {
    return a.x | (a.y << 3u) | (a.z << 6u) | (a.w << 9u);
}

// pack_choices' inverse from bit `at` of word w
fn unpack_choices(w: u32, at: u32) -> vec4<u32> {
    return (vec4<u32>(w) >> (vec4<u32>(at) + vec4<u32>(0u, 3u, 6u, 9u))) & vec4<u32>(7u);
}

// Channel quad q of a pair: the conv values at the first window's 4 positions (a..d) and the second's
// (e..h), each window's max and choice stored at quad `at` and `at + r` (the second only if `second`).
fn pool_quad(at: u32, r: u32, valid: bool, second: bool, a: array<f32, 9>, b: array<f32, 9>, c: array<f32, 9>,
             d: array<f32, 9>, e: array<f32, 9>, f: array<f32, 9>, g: array<f32, 9>, h: array<f32, 9>,
             bq: vec4<f32>, q: u32) -> vec2<u32> {
    let m1 = pool_max(conv9(a, bq, q), conv9(b, bq, q), conv9(c, bq, q), conv9(d, bq, q));
    pool_store4(at, valid, m1);
    let m2 = pool_max(conv9(e, bq, q), conv9(f, bq, q), conv9(g, bq, q), conv9(h, bq, q));
    pool_store4(at + r, valid && second, m2);
    return vec2<u32>(pack_choices(m1.arg), pack_choices(m2.arg));
}

// Six consecutive inputs of a patch row from quad `at` (the last two of the second quad unused).
fn patch_row(at: u32) -> array<f32, 6> {
    let a = x4[at];
    let b = x4[at + 1u];
    return array<f32, 6>(a.x, a.y, a.z, a.w, b.x, b.y);
}

// The 3x3 inputs of the conv position at column c (0..3) whose rows are a, b, c2, in tap order.
fn window9(a: array<f32, 6>, b: array<f32, 6>, d: array<f32, 6>, c: u32) -> array<f32, 9> {
    return array<f32, 9>(a[c], a[c + 1u], a[c + 2u], b[c], b[c + 1u], b[c + 2u], d[c], d[c + 1u], d[c + 2u]);
}

// bias + the 9 taps in order for channel quad q of the window (q a constant at every call; 48 on: the
// window's second group)
fn conv9(v: array<f32, 9>, b: vec4<f32>, q: u32) -> vec4<f32> {
    var a = b;
    a += v[0] * kernel_u[q];
    a += v[1] * kernel_u[4u + q];
    a += v[2] * kernel_u[8u + q];
    a += v[3] * kernel_u[12u + q];
    a += v[4] * kernel_u[16u + q];
    a += v[5] * kernel_u[20u + q];
    a += v[6] * kernel_u[24u + q];
    a += v[7] * kernel_u[28u + q];
    a += v[8] * kernel_u[32u + q];
    return a;
}

// grid (ceil(groups * GROUP_STRIDE / 64)): `kgroups` from the 3x3 one-channel kernel and the bias.
@compute @workgroup_size(64)
fn conv2d_group_kernel(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wg.x * 64u + lid;
    let groups = (P.out_c + 15u) / 16u;
    if (e >= groups * GROUP_STRIDE) {
        return;
    }
    let j = e % GROUP_STRIDE;
    let o = (e / GROUP_STRIDE) * 16u + (j % 16u);
    var v = 0.0;
    if (j < 144u && o < P.out_c) {
        v = kernel[(j / 16u) * P.out_c + o];
    } else if (j < 160u && o < P.out_c) {
        v = bias[o];
    }
    kgroups[e] = v;
}

// The fused forward's stores as channel quads (OC % 4 == 0).
fn store_pair4(t: PoolPair, o0: u32) {
    let a = t.a;
    let o = t.out >> 2u;
    let r = P.out_c >> 2u;
    // channel quads past OC (OC not a multiple of 16) are not stored
    let more = vec3<bool>(o0 + 4u < P.out_c, o0 + 8u < P.out_c, o0 + 12u < P.out_c);
    pool_store4(o, true, pool_max(a[0], a[4], a[8], a[12]));
    pool_store4(o + 1u, more.x, pool_max(a[1], a[5], a[9], a[13]));
    pool_store4(o + 2u, more.y, pool_max(a[2], a[6], a[10], a[14]));
    pool_store4(o + 3u, more.z, pool_max(a[3], a[7], a[11], a[15]));
    pool_store4(o + r, t.second, pool_max(a[16], a[20], a[24], a[28]));
    pool_store4(o + r + 1u, t.second && more.x, pool_max(a[17], a[21], a[25], a[29]));
    pool_store4(o + r + 2u, t.second && more.y, pool_max(a[18], a[22], a[26], a[30]));
    pool_store4(o + r + 3u, t.second && more.z, pool_max(a[19], a[23], a[27], a[31]));
}

// (the choices only where they are not packed: PACKED_ARGMAX, the 3x3 one-channel forward of a first layer)
fn pool_store4(at: u32, valid: bool, m: PoolMax) {
    if (valid) {
        y4[at] = m.best;
        if (!PACKED_ARGMAX) {
            argmax4[at] = m.arg;
        }
    }
}

// The register tile of one invocation of the fused forward: a[p * 4 + q] = conv output (before relu) at
// window position p (0..3 the first pooled pixel's window in row-major order, 4..7 the second's) for
// channel quad q; `out` the flat index of the first pooled pixel's channel o0, `second` whether the pair
// has a second pixel, `valid` whether the invocation has a pair at all.
struct PoolPair {
    a: array<vec4<f32>, 32>,
    out: u32,
    second: bool,
    valid: bool,
}

fn pool_pair(pair: u32, n: u32, o0: u32) -> PoolPair {
    let out_ph = P.out_h / 2u;
    let out_pw = P.out_w / 2u;
    let pairs_per_row = (out_pw + 1u) / 2u;
    var t: PoolPair;
    t.valid = pair < out_ph * pairs_per_row;
    if (!t.valid) {
        return t;
    }
    let ph = pair / pairs_per_row;
    let pw = (pair % pairs_per_row) * 2u;
    t.second = pw + 1u < out_pw;   // an odd row's last pair has one pixel
    let pw2 = select(pw, pw + 1u, t.second);
    // each window's conv positions in row-major order: (0,0), (0,1), (1,0), (1,1)
    let ih = vec4<i32>(i32(2u * ph)) + vec4<i32>(0, 0, 1, 1) - vec4<i32>(i32(P.pad_h));
    let iw = vec4<i32>(i32(2u * pw)) + vec4<i32>(0, 1, 0, 1) - vec4<i32>(i32(P.pad_w));
    let jw = vec4<i32>(i32(2u * pw2)) + vec4<i32>(0, 1, 0, 1) - vec4<i32>(i32(P.pad_w));
    let row = (vec4<i32>(i32(n * P.in_h)) + ih) * i32(P.in_w);
    let base = (row + iw) * i32(P.in_c);
    let base2 = (row + jw) * i32(P.in_c);
    // accumulators: window position p (0..7, the second window 4..7) x channel quad q (0..3) = a{p}{q}
    let q0 = bias4(o0); let q1 = bias4(o0 + 4u); let q2 = bias4(o0 + 8u); let q3 = bias4(o0 + 12u);
    var a00 = q0; var a01 = q1; var a02 = q2; var a03 = q3;
    var a10 = q0; var a11 = q1; var a12 = q2; var a13 = q3;
    var a20 = q0; var a21 = q1; var a22 = q2; var a23 = q3;
    var a30 = q0; var a31 = q1; var a32 = q2; var a33 = q3;
    var a40 = q0; var a41 = q1; var a42 = q2; var a43 = q3;
    var a50 = q0; var a51 = q1; var a52 = q2; var a53 = q3;
    var a60 = q0; var a61 = q1; var a62 = q2; var a63 = q3;
    var a70 = q0; var a71 = q1; var a72 = q2; var a73 = q3;
    let n_taps = P.k * P.k * P.in_c;
    let right = vec4<i32>(i32(P.in_w));
    let down = vec4<i32>(i32(P.in_h));
    for (var ti = 0u; ti < n_taps; ti++) {
        let tap = taps_u[ti];   // (di, dj, input offset, kind)
        let h = ih + tap.x;
        let hok = (h >= vec4<i32>(0)) & (h < down);
        let w = iw + tap.y;
        let ok = hok & (w >= vec4<i32>(0)) & (w < right);
        let w2 = jw + tap.y;
        let ok2 = hok & (w2 >= vec4<i32>(0)) & (w2 < right);
        let kb = ti * P.out_c + o0;
        let k0 = kernel4u(kb);
        let k1 = kernel4u(kb + 4u);
        let k2 = kernel4u(kb + 8u);
        let k3 = kernel4u(kb + 12u);
        let v = vec4<f32>(xval(base.x + tap.z, ok.x), xval(base.y + tap.z, ok.y),
                          xval(base.z + tap.z, ok.z), xval(base.w + tap.z, ok.w));
        let u = vec4<f32>(xval(base2.x + tap.z, ok2.x), xval(base2.y + tap.z, ok2.y),
                          xval(base2.z + tap.z, ok2.z), xval(base2.w + tap.z, ok2.w));
        a00 += v.x * k0; a01 += v.x * k1; a02 += v.x * k2; a03 += v.x * k3;
        a10 += v.y * k0; a11 += v.y * k1; a12 += v.y * k2; a13 += v.y * k3;
        a20 += v.z * k0; a21 += v.z * k1; a22 += v.z * k2; a23 += v.z * k3;
        a30 += v.w * k0; a31 += v.w * k1; a32 += v.w * k2; a33 += v.w * k3;
        a40 += u.x * k0; a41 += u.x * k1; a42 += u.x * k2; a43 += u.x * k3;
        a50 += u.y * k0; a51 += u.y * k1; a52 += u.y * k2; a53 += u.y * k3;
        a60 += u.z * k0; a61 += u.z * k1; a62 += u.z * k2; a63 += u.z * k3;
        a70 += u.w * k0; a71 += u.w * k1; a72 += u.w * k2; a73 += u.w * k3;
    }
    t.out = (n * out_ph * out_pw + ph * out_pw + pw) * P.out_c + o0;
    t.a = array<vec4<f32>, 32>(a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33,
                               a40, a41, a42, a43, a50, a51, a52, a53, a60, a61, a62, a63, a70, a71, a72, a73);
    return t;
}

// relu, then the first maximum of a window (strict >, row-major) for 4 channels, and its position (4 where
// the maximum is 0).
struct PoolMax {
    best: vec4<f32>,
    arg: vec4<u32>,
}

fn pool_max(p0: vec4<f32>, p1: vec4<f32>, p2: vec4<f32>, p3: vec4<f32>) -> PoolMax {
    let zero = vec4<f32>(0.0);
    var best = max(p0, zero);
    var arg = vec4<u32>(0u);
    let c1 = max(p1, zero);
    let c2 = max(p2, zero);
    let c3 = max(p3, zero);
    arg = select(arg, vec4<u32>(1u), c1 > best); best = max(best, c1);
    arg = select(arg, vec4<u32>(2u), c2 > best); best = max(best, c2);
    arg = select(arg, vec4<u32>(3u), c3 > best); best = max(best, c3);
    arg = select(arg, vec4<u32>(4u), best <= zero);
    return PoolMax(best, arg);
}

// A window's maximum and position for 4 channels from o0, stored at `at` when `valid`.
fn pool_store(at: u32, o0: u32, valid: bool, m: PoolMax) {
    for (var q = 0u; q < 4u; q++) {
        if (valid && o0 + q < P.out_c) {
            y[at + q] = m.best[q];
            argmax[at + q] = m.arg[q];
        }
    }
}

// Patch-row value for one output position: tap = (di, dj, offset from the position's input origin,
// kind: 0 input, 1 the bias row (constant 1), 2 no row).
fn row_value(tap: vec4<i32>, origin: i32, ih: i32, iw: i32) -> f32 {
    let h = ih + tap.x;
    let w = iw + tap.y;
    let ok = tap.w == 0 && h >= 0 && h < i32(P.in_h) && w >= 0 && w < i32(P.in_w);
    return select(select(0.0, 1.0, tap.w == 1), x[u32(max(origin + tap.z, 0))], ok);
}

// grid (ceil(chunks/64), ceil((k*k*IC + 1)/8), ceil(OC/8)): one invocation per (chunk of `rows_per`
// output rows of one image, 8 patch rows (the bias is patch row k*k*IC), 8 output channels): per
// output position 8 inputs and 8 gradients feed 64 multiply-adds into 16 vec4 registers. The 8 rows are
// arrays in constant-trip loops, not 8 spelled-out statements: llvmpipe unrolls them back into registers
// (same speed, same results), and Chromium's compiler (Tint, SwiftShader) no longer grows to 14 GB on
// the spelled-out body (tests/browsers.rs).
@compute @workgroup_size(64)
fn conv2d_weight_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = wg.x * 64u + lid;
    if (chunk >= P.chunks) {
        return;
    }
    let rows = P.k * P.k * P.in_c + 1u;
    let t0 = wg.y * 8u;
    let o0 = wg.z * 8u;
    let chunks_per_image = (P.out_h + P.rows_per - 1u) / P.rows_per;
    let n = chunk / chunks_per_image;
    let i0 = (chunk % chunks_per_image) * P.rows_per;
    let i1 = min(i0 + P.rows_per, P.out_h);
    var tap: array<vec4<i32>, 8>;
    var acc_a: array<vec4<f32>, 8>;
    var acc_b: array<vec4<f32>, 8>;
    for (var r = 0u; r < 8u; r++) {
        tap[r] = taps[t0 + r];
    }
    let lo = P.out_c - 1u;
    for (var i = i0; i < i1; i++) {
        let ih = i32(i * P.stride) - i32(P.pad_h);
        var at = ((n * P.out_h + i) * P.out_w) * P.out_c;
        var origin = ((i32(n * P.in_h) + ih) * i32(P.in_w) - i32(P.pad_w)) * i32(P.in_c);
        for (var j = 0u; j < P.out_w; j++) {
            let iw = i32(j * P.stride) - i32(P.pad_w);
            let g0 = vec4<f32>(grad_at(n, i, j, at, min(o0, lo)), grad_at(n, i, j, at, min(o0 + 1u, lo)),
                               grad_at(n, i, j, at, min(o0 + 2u, lo)), grad_at(n, i, j, at, min(o0 + 3u, lo)));
            let g1 = vec4<f32>(grad_at(n, i, j, at, min(o0 + 4u, lo)), grad_at(n, i, j, at, min(o0 + 5u, lo)),
                               grad_at(n, i, j, at, min(o0 + 6u, lo)), grad_at(n, i, j, at, min(o0 + 7u, lo)));
            for (var r = 0u; r < 8u; r++) {
                let v = row_value(tap[r], origin, ih, iw);
                acc_a[r] += v * g0;
                acc_b[r] += v * g1;
            }
            at += P.out_c;
            origin += i32(P.stride * P.in_c);
        }
    }
    for (var r = 0u; r < 8u; r++) {
        store_partial(chunk, rows, t0 + r, o0, acc_a[r], acc_b[r]);
    }
}

// The 4 window candidates of one patch row at pooled position (ih, iw) = its window's top-left input
// coordinate (origin: input offset of (ih, iw)), in the order of argmax: (0,0), (0,1), (1,0), (1,1).
// The bias row is 1 at every position; padding rows are 0.
fn window_values(tap: vec4<i32>, origin: i32, ih: i32, iw: i32) -> vec4<f32> {
    if (tap.w == 1) {
        return vec4<f32>(1.0);
    }
    if (tap.w == 2) {
        return vec4<f32>(0.0);
    }
    let h = ih + tap.x;
    let w = iw + tap.y;
    let h0 = h >= 0 && h < i32(P.in_h);
    let h1 = h + 1 >= 0 && h + 1 < i32(P.in_h);
    let w0 = w >= 0 && w < i32(P.in_w);
    let w1 = w + 1 >= 0 && w + 1 < i32(P.in_w);
    let at = origin + tap.z;
    let down = i32(P.in_w * P.in_c);
    let right = i32(P.in_c);
    return vec4<f32>(select(0.0, x[u32(max(at, 0))], h0 && w0),
                     select(0.0, x[u32(max(at + right, 0))], h0 && w1),
                     select(0.0, x[u32(max(at + down, 0))], h1 && w0),
                     select(0.0, x[u32(max(at + down + right, 0))], h1 && w1));
}

// The weight gradient of a conv fused with its 2x2 max-pool (POOLED), iterating over pooled positions:
// only the window position the pool chose has a gradient, so a quarter of the conv positions is visited.
// grid (ceil(chunks/64), ceil((k*k*IC + 1)/10), ceil(OC/16)): one invocation per (chunk of `rows_per`
// pooled rows of one image, 10 patch rows (the bias is patch row k*k*IC), 16 output channels). Per pooled
// position, 16 gradients and 16 choices make 4 per-position weight vectors per channel quad (the gradient
// where the channel chose that position, else 0); each patch row loads its 4 window values once for all
// 16 channels. (10 rows: the reference conv has 10 patch rows, so no row is padding.)
@compute @workgroup_size(64)
fn conv2d_weight_partials_pooled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = wg.x * 64u + lid;
    if (chunk >= P.chunks) {
        return;
    }
    let rows = P.k * P.k * P.in_c + 1u;
    let t0 = wg.y * 10u;
    let o0 = wg.z * 16u;
    let out_ph = P.out_h / 2u;
    let out_pw = P.out_w / 2u;
    let span = chunk_rows(chunk, out_ph);
    let n = span.x;
    let p0 = span.y;
    let p1 = span.z;
    let r0 = taps[t0]; let r1 = taps[t0 + 1u]; let r2 = taps[t0 + 2u]; let r3 = taps[t0 + 3u]; let r4 = taps[t0 + 4u];
    let r5 = taps[t0 + 5u]; let r6 = taps[t0 + 6u]; let r7 = taps[t0 + 7u]; let r8 = taps[t0 + 8u]; let r9 = taps[t0 + 9u];
    let lo = P.out_c - 1u;
    let c0 = min(o0 + 0u, lo); let c1 = min(o0 + 1u, lo); let c2 = min(o0 + 2u, lo); let c3 = min(o0 + 3u, lo);
    let c4 = min(o0 + 4u, lo); let c5 = min(o0 + 5u, lo); let c6 = min(o0 + 6u, lo); let c7 = min(o0 + 7u, lo);
    let c8 = min(o0 + 8u, lo); let c9 = min(o0 + 9u, lo); let c10 = min(o0 + 10u, lo); let c11 = min(o0 + 11u, lo);
    let c12 = min(o0 + 12u, lo); let c13 = min(o0 + 13u, lo); let c14 = min(o0 + 14u, lo); let c15 = min(o0 + 15u, lo);
    let zero = vec4<f32>(0.0);
    var a0_0 = zero; var a0_1 = zero; var a0_2 = zero; var a0_3 = zero;
    var a1_0 = zero; var a1_1 = zero; var a1_2 = zero; var a1_3 = zero;
    var a2_0 = zero; var a2_1 = zero; var a2_2 = zero; var a2_3 = zero;
    var a3_0 = zero; var a3_1 = zero; var a3_2 = zero; var a3_3 = zero;
    var a4_0 = zero; var a4_1 = zero; var a4_2 = zero; var a4_3 = zero;
    var a5_0 = zero; var a5_1 = zero; var a5_2 = zero; var a5_3 = zero;
    var a6_0 = zero; var a6_1 = zero; var a6_2 = zero; var a6_3 = zero;
    var a7_0 = zero; var a7_1 = zero; var a7_2 = zero; var a7_3 = zero;
    var a8_0 = zero; var a8_1 = zero; var a8_2 = zero; var a8_3 = zero;
    var a9_0 = zero; var a9_1 = zero; var a9_2 = zero; var a9_3 = zero;
    for (var ph = p0; ph < p1; ph++) {
        let ih = i32(2u * ph) - i32(P.pad_h);
        var at = (n * out_ph + ph) * out_pw * P.out_c;
        var origin = ((i32(n * P.in_h) + ih) * i32(P.in_w) - i32(P.pad_w)) * i32(P.in_c);
        for (var pw = 0u; pw < out_pw; pw++) {
            let iw = i32(2u * pw) - i32(P.pad_w);
            let g0 = vec4<f32>(dy[at + c0], dy[at + c1], dy[at + c2], dy[at + c3]);
            let s0 = vec4<u32>(argmax[at + c0], argmax[at + c1], argmax[at + c2], argmax[at + c3]);
            let g1 = vec4<f32>(dy[at + c4], dy[at + c5], dy[at + c6], dy[at + c7]);
            let s1 = vec4<u32>(argmax[at + c4], argmax[at + c5], argmax[at + c6], argmax[at + c7]);
            let g2 = vec4<f32>(dy[at + c8], dy[at + c9], dy[at + c10], dy[at + c11]);
            let s2 = vec4<u32>(argmax[at + c8], argmax[at + c9], argmax[at + c10], argmax[at + c11]);
            let g3 = vec4<f32>(dy[at + c12], dy[at + c13], dy[at + c14], dy[at + c15]);
            let s3 = vec4<u32>(argmax[at + c12], argmax[at + c13], argmax[at + c14], argmax[at + c15]);
            let w00 = select(zero, g0, s0 == vec4<u32>(0u)); let w10 = select(zero, g0, s0 == vec4<u32>(1u));
            let w20 = select(zero, g0, s0 == vec4<u32>(2u)); let w30 = select(zero, g0, s0 == vec4<u32>(3u));
            let w01 = select(zero, g1, s1 == vec4<u32>(0u)); let w11 = select(zero, g1, s1 == vec4<u32>(1u));
            let w21 = select(zero, g1, s1 == vec4<u32>(2u)); let w31 = select(zero, g1, s1 == vec4<u32>(3u));
            let w02 = select(zero, g2, s2 == vec4<u32>(0u)); let w12 = select(zero, g2, s2 == vec4<u32>(1u));
            let w22 = select(zero, g2, s2 == vec4<u32>(2u)); let w32 = select(zero, g2, s2 == vec4<u32>(3u));
            let w03 = select(zero, g3, s3 == vec4<u32>(0u)); let w13 = select(zero, g3, s3 == vec4<u32>(1u));
            let w23 = select(zero, g3, s3 == vec4<u32>(2u)); let w33 = select(zero, g3, s3 == vec4<u32>(3u));
            let v0 = window_values(r0, origin, ih, iw);
            a0_0 += v0.x * w00 + v0.y * w10 + v0.z * w20 + v0.w * w30;
            a0_1 += v0.x * w01 + v0.y * w11 + v0.z * w21 + v0.w * w31;
            a0_2 += v0.x * w02 + v0.y * w12 + v0.z * w22 + v0.w * w32;
            a0_3 += v0.x * w03 + v0.y * w13 + v0.z * w23 + v0.w * w33;
            let v1 = window_values(r1, origin, ih, iw);
            a1_0 += v1.x * w00 + v1.y * w10 + v1.z * w20 + v1.w * w30;
            a1_1 += v1.x * w01 + v1.y * w11 + v1.z * w21 + v1.w * w31;
            a1_2 += v1.x * w02 + v1.y * w12 + v1.z * w22 + v1.w * w32;
            a1_3 += v1.x * w03 + v1.y * w13 + v1.z * w23 + v1.w * w33;
            let v2 = window_values(r2, origin, ih, iw);
            a2_0 += v2.x * w00 + v2.y * w10 + v2.z * w20 + v2.w * w30;
            a2_1 += v2.x * w01 + v2.y * w11 + v2.z * w21 + v2.w * w31;
            a2_2 += v2.x * w02 + v2.y * w12 + v2.z * w22 + v2.w * w32;
            a2_3 += v2.x * w03 + v2.y * w13 + v2.z * w23 + v2.w * w33;
            let v3 = window_values(r3, origin, ih, iw);
            a3_0 += v3.x * w00 + v3.y * w10 + v3.z * w20 + v3.w * w30;
            a3_1 += v3.x * w01 + v3.y * w11 + v3.z * w21 + v3.w * w31;
            a3_2 += v3.x * w02 + v3.y * w12 + v3.z * w22 + v3.w * w32;
            a3_3 += v3.x * w03 + v3.y * w13 + v3.z * w23 + v3.w * w33;
            let v4 = window_values(r4, origin, ih, iw);
            a4_0 += v4.x * w00 + v4.y * w10 + v4.z * w20 + v4.w * w30;
            a4_1 += v4.x * w01 + v4.y * w11 + v4.z * w21 + v4.w * w31;
            a4_2 += v4.x * w02 + v4.y * w12 + v4.z * w22 + v4.w * w32;
            a4_3 += v4.x * w03 + v4.y * w13 + v4.z * w23 + v4.w * w33;
            let v5 = window_values(r5, origin, ih, iw);
            a5_0 += v5.x * w00 + v5.y * w10 + v5.z * w20 + v5.w * w30;
            a5_1 += v5.x * w01 + v5.y * w11 + v5.z * w21 + v5.w * w31;
            a5_2 += v5.x * w02 + v5.y * w12 + v5.z * w22 + v5.w * w32;
            a5_3 += v5.x * w03 + v5.y * w13 + v5.z * w23 + v5.w * w33;
            let v6 = window_values(r6, origin, ih, iw);
            a6_0 += v6.x * w00 + v6.y * w10 + v6.z * w20 + v6.w * w30;
            a6_1 += v6.x * w01 + v6.y * w11 + v6.z * w21 + v6.w * w31;
            a6_2 += v6.x * w02 + v6.y * w12 + v6.z * w22 + v6.w * w32;
            a6_3 += v6.x * w03 + v6.y * w13 + v6.z * w23 + v6.w * w33;
            let v7 = window_values(r7, origin, ih, iw);
            a7_0 += v7.x * w00 + v7.y * w10 + v7.z * w20 + v7.w * w30;
            a7_1 += v7.x * w01 + v7.y * w11 + v7.z * w21 + v7.w * w31;
            a7_2 += v7.x * w02 + v7.y * w12 + v7.z * w22 + v7.w * w32;
            a7_3 += v7.x * w03 + v7.y * w13 + v7.z * w23 + v7.w * w33;
            let v8 = window_values(r8, origin, ih, iw);
            a8_0 += v8.x * w00 + v8.y * w10 + v8.z * w20 + v8.w * w30;
            a8_1 += v8.x * w01 + v8.y * w11 + v8.z * w21 + v8.w * w31;
            a8_2 += v8.x * w02 + v8.y * w12 + v8.z * w22 + v8.w * w32;
            a8_3 += v8.x * w03 + v8.y * w13 + v8.z * w23 + v8.w * w33;
            let v9 = window_values(r9, origin, ih, iw);
            a9_0 += v9.x * w00 + v9.y * w10 + v9.z * w20 + v9.w * w30;
            a9_1 += v9.x * w01 + v9.y * w11 + v9.z * w21 + v9.w * w31;
            a9_2 += v9.x * w02 + v9.y * w12 + v9.z * w22 + v9.w * w32;
            a9_3 += v9.x * w03 + v9.y * w13 + v9.z * w23 + v9.w * w33;
            at += P.out_c;
            origin += 2 * i32(P.in_c);
        }
    }
    store_partial16(chunk, rows, t0, o0, a0_0, a0_1, a0_2, a0_3);
    store_partial16(chunk, rows, t0 + 1u, o0, a1_0, a1_1, a1_2, a1_3);
    store_partial16(chunk, rows, t0 + 2u, o0, a2_0, a2_1, a2_2, a2_3);
    store_partial16(chunk, rows, t0 + 3u, o0, a3_0, a3_1, a3_2, a3_3);
    store_partial16(chunk, rows, t0 + 4u, o0, a4_0, a4_1, a4_2, a4_3);
    store_partial16(chunk, rows, t0 + 5u, o0, a5_0, a5_1, a5_2, a5_3);
    store_partial16(chunk, rows, t0 + 6u, o0, a6_0, a6_1, a6_2, a6_3);
    store_partial16(chunk, rows, t0 + 7u, o0, a7_0, a7_1, a7_2, a7_3);
    store_partial16(chunk, rows, t0 + 8u, o0, a8_0, a8_1, a8_2, a8_3);
    store_partial16(chunk, rows, t0 + 9u, o0, a9_0, a9_1, a9_2, a9_3);
}

// A pooled weight-gradient chunk's image and pooled rows [p0, p1): (n, p0, p1), P.rows_per rows a chunk.
fn chunk_rows(chunk: u32, out_ph: u32) -> vec3<u32> {
    let chunks_per_image = (out_ph + P.rows_per - 1u) / P.rows_per;
    let p0 = (chunk % chunks_per_image) * P.rows_per;
    return vec3<u32>(chunk / chunks_per_image, p0, min(p0 + P.rows_per, out_ph));
}

// conv2d_weight_partials_pooled for the 3x3 one-channel layer of FORWARD_K3C1 (valid, IW % 4 == 0,
// OC % 4 == 0): the same tile (all 10 patch rows x 16 channels) and the same sums in the same order
// (bit-identical), with every access a quad: per pair of pooled pixels, the 4x6 input patch as 8 quads
// and each pixel's 16 gradients and choices as 4 + 4, where the general kernel loads 144 scalars one lane
// at a time; the 40 partial sums are stored as quads.
@compute @workgroup_size(64)
fn conv2d_weight_partials_pooled_k3c1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = wg.x * 64u + lid;
    if (chunk >= P.chunks) {
        return;
    }
    let o0 = wg.z * 16u;
    let out_ph = P.out_h / 2u;
    let out_pw = P.out_w / 2u;
    let span = chunk_rows(chunk, out_ph);
    let n = span.x;
    let p0 = span.y;
    let p1 = span.z;
    let pairs = out_pw / 2u;
    let oq = P.out_c >> 2u;   // channel quads per pooled pixel
    let row = P.in_w >> 2u;   // quads per input row
    var a: array<vec4<f32>, 40>;   // patch row t (the bias is 9) x channel quad q at t * 4 + q
    for (var ph = p0; ph < p1; ph++) {
        let xq = ((n * P.in_h + 2u * ph) * P.in_w) >> 2u;
        let gq = ((n * out_ph + ph) * out_pw * P.out_c + o0) >> 2u;
        let px = (n * out_ph + ph) * out_pw;   // the row's first pooled pixel
        for (var pr = 0u; pr < pairs; pr++) {
            let pp = patch4(xq + pr, row);
            pooled_pixel(&a, pp, 0u, pixel_grad(gq + 2u * pr * oq, px + 2u * pr, wg.z));
            pooled_pixel(&a, pp, 2u, pixel_grad(gq + (2u * pr + 1u) * oq, px + 2u * pr + 1u, wg.z));
        }
        if (out_pw % 2u == 1u) {   // an odd row's last pixel, on its own
            pooled_pixel(&a, patch4(xq + pairs, row), 0u, pixel_grad(gq + 2u * pairs * oq, px + 2u * pairs, wg.z));
        }
    }
    let base = (chunk * 10u * P.out_c + o0) >> 2u;
    let more = vec3<bool>(o0 + 4u < P.out_c, o0 + 8u < P.out_c, o0 + 12u < P.out_c);
    store_partials4(base + 0u * oq, more, a[0], a[1], a[2], a[3]);
    store_partials4(base + 1u * oq, more, a[4], a[5], a[6], a[7]);
    store_partials4(base + 2u * oq, more, a[8], a[9], a[10], a[11]);
    store_partials4(base + 3u * oq, more, a[12], a[13], a[14], a[15]);
    store_partials4(base + 4u * oq, more, a[16], a[17], a[18], a[19]);
    store_partials4(base + 5u * oq, more, a[20], a[21], a[22], a[23]);
    store_partials4(base + 6u * oq, more, a[24], a[25], a[26], a[27]);
    store_partials4(base + 7u * oq, more, a[28], a[29], a[30], a[31]);
    store_partials4(base + 8u * oq, more, a[32], a[33], a[34], a[35]);
    store_partials4(base + 9u * oq, more, a[36], a[37], a[38], a[39]);
}

// Four channel quads of partial sums from quad `at` (quads past OC dropped).
fn store_partials4(at: u32, more: vec3<bool>, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>) {
    partials4[at] = q0;
    if (more.x) { partials4[at + 1u] = q1; }
    if (more.y) { partials4[at + 2u] = q2; }
    if (more.z) { partials4[at + 3u] = q3; }
}

// Four patch rows of six inputs from quad `at` (rows `row` quads apart).
fn patch4(at: u32, row: u32) -> array<array<f32, 6>, 4> {
    return array<array<f32, 6>, 4>(patch_row(at), patch_row(at + row), patch_row(at + 2u * row),
                                   patch_row(at + 3u * row));
}

// A pooled pixel's pool gradient for 16 channels (4 quads; zero where the window's maximum was 0, whose
// gradient goes nowhere) and, per channel, the window position its maximum came from (argmax order).
// `at`: the pixel's first channel quad; `pixel`, `group`: the pixel's index and the 16-channel group
// (PACKED_ARGMAX). In a partial 16-channel group the quads past OC read the next
// pixel's values (past the end of the buffer for the last one: clamped or zeroed by WebGPU); their sums
// are never stored.
struct PixelGrad {
    g: array<vec4<f32>, 4>,
    s: array<vec4<u32>, 4>,
}

fn pixel_grad(at: u32, pixel: u32, group: u32) -> PixelGrad {
    let z = vec4<f32>(0.0);
    var s: array<vec4<u32>, 4>;
    if (PACKED_ARGMAX) {
        // pixel's quad of the group pair; this group's two words
        let q = argmax4[pixel * ((P.out_c + 31u) / 32u) + group / 2u];
        let w = select(q.zw, q.xy, group % 2u == 0u);
        s = array<vec4<u32>, 4>(unpack_choices(w.x, 0u), unpack_choices(w.x, 12u), unpack_choices(w.y, 0u),
                                unpack_choices(w.y, 12u));
    } else {
        s = array<vec4<u32>, 4>(argmax4[at], argmax4[at + 1u], argmax4[at + 2u], argmax4[at + 3u]);
    }
    let four = vec4<u32>(4u);
    return PixelGrad(array<vec4<f32>, 4>(select(z, dy4[at], s[0] < four), select(z, dy4[at + 1u], s[1] < four),
                                         select(z, dy4[at + 2u], s[2] < four), select(z, dy4[at + 3u], s[3] < four)), s);
}

// Per channel of a quad, the input of the window position its maximum came from (s: 0..3, row-major;
// 4, no gradient, picks any).
fn chosen(p0: f32, p1: f32, p2: f32, p3: f32, s: vec4<u32>) -> vec4<f32> {
    return select(select(select(vec4<f32>(p0), vec4<f32>(p1), s == vec4<u32>(1u)), vec4<f32>(p2), s == vec4<u32>(2u)),
                  vec4<f32>(p3), s == vec4<u32>(3u));
}

// One pooled pixel's contribution (its window at patch column c: 0 or 2) to the 40 sums: per tap and
// channel, the chosen position's input times the gradient. The general kernel adds all four positions'
// products, three of them times 0: the same sums (up to the sign of a zero), a third of the arithmetic.
fn pooled_pixel(a: ptr<function, array<vec4<f32>, 40>>, p: array<array<f32, 6>, 4>, c: u32, g: PixelGrad) {
    (*a)[0] += chosen(p[0][c + 0u], p[0][c + 1u], p[1][c + 0u], p[1][c + 1u], g.s[0]) * g.g[0];
    (*a)[1] += chosen(p[0][c + 0u], p[0][c + 1u], p[1][c + 0u], p[1][c + 1u], g.s[1]) * g.g[1];
    (*a)[2] += chosen(p[0][c + 0u], p[0][c + 1u], p[1][c + 0u], p[1][c + 1u], g.s[2]) * g.g[2];
    (*a)[3] += chosen(p[0][c + 0u], p[0][c + 1u], p[1][c + 0u], p[1][c + 1u], g.s[3]) * g.g[3];
    (*a)[4] += chosen(p[0][c + 1u], p[0][c + 2u], p[1][c + 1u], p[1][c + 2u], g.s[0]) * g.g[0];
    (*a)[5] += chosen(p[0][c + 1u], p[0][c + 2u], p[1][c + 1u], p[1][c + 2u], g.s[1]) * g.g[1];
    (*a)[6] += chosen(p[0][c + 1u], p[0][c + 2u], p[1][c + 1u], p[1][c + 2u], g.s[2]) * g.g[2];
    (*a)[7] += chosen(p[0][c + 1u], p[0][c + 2u], p[1][c + 1u], p[1][c + 2u], g.s[3]) * g.g[3];
    (*a)[8] += chosen(p[0][c + 2u], p[0][c + 3u], p[1][c + 2u], p[1][c + 3u], g.s[0]) * g.g[0];
    (*a)[9] += chosen(p[0][c + 2u], p[0][c + 3u], p[1][c + 2u], p[1][c + 3u], g.s[1]) * g.g[1];
    (*a)[10] += chosen(p[0][c + 2u], p[0][c + 3u], p[1][c + 2u], p[1][c + 3u], g.s[2]) * g.g[2];
    (*a)[11] += chosen(p[0][c + 2u], p[0][c + 3u], p[1][c + 2u], p[1][c + 3u], g.s[3]) * g.g[3];
    (*a)[12] += chosen(p[1][c + 0u], p[1][c + 1u], p[2][c + 0u], p[2][c + 1u], g.s[0]) * g.g[0];
    (*a)[13] += chosen(p[1][c + 0u], p[1][c + 1u], p[2][c + 0u], p[2][c + 1u], g.s[1]) * g.g[1];
    (*a)[14] += chosen(p[1][c + 0u], p[1][c + 1u], p[2][c + 0u], p[2][c + 1u], g.s[2]) * g.g[2];
    (*a)[15] += chosen(p[1][c + 0u], p[1][c + 1u], p[2][c + 0u], p[2][c + 1u], g.s[3]) * g.g[3];
    (*a)[16] += chosen(p[1][c + 1u], p[1][c + 2u], p[2][c + 1u], p[2][c + 2u], g.s[0]) * g.g[0];
    (*a)[17] += chosen(p[1][c + 1u], p[1][c + 2u], p[2][c + 1u], p[2][c + 2u], g.s[1]) * g.g[1];
    (*a)[18] += chosen(p[1][c + 1u], p[1][c + 2u], p[2][c + 1u], p[2][c + 2u], g.s[2]) * g.g[2];
    (*a)[19] += chosen(p[1][c + 1u], p[1][c + 2u], p[2][c + 1u], p[2][c + 2u], g.s[3]) * g.g[3];
    (*a)[20] += chosen(p[1][c + 2u], p[1][c + 3u], p[2][c + 2u], p[2][c + 3u], g.s[0]) * g.g[0];
    (*a)[21] += chosen(p[1][c + 2u], p[1][c + 3u], p[2][c + 2u], p[2][c + 3u], g.s[1]) * g.g[1];
    (*a)[22] += chosen(p[1][c + 2u], p[1][c + 3u], p[2][c + 2u], p[2][c + 3u], g.s[2]) * g.g[2];
    (*a)[23] += chosen(p[1][c + 2u], p[1][c + 3u], p[2][c + 2u], p[2][c + 3u], g.s[3]) * g.g[3];
    (*a)[24] += chosen(p[2][c + 0u], p[2][c + 1u], p[3][c + 0u], p[3][c + 1u], g.s[0]) * g.g[0];
    (*a)[25] += chosen(p[2][c + 0u], p[2][c + 1u], p[3][c + 0u], p[3][c + 1u], g.s[1]) * g.g[1];
    (*a)[26] += chosen(p[2][c + 0u], p[2][c + 1u], p[3][c + 0u], p[3][c + 1u], g.s[2]) * g.g[2];
    (*a)[27] += chosen(p[2][c + 0u], p[2][c + 1u], p[3][c + 0u], p[3][c + 1u], g.s[3]) * g.g[3];
    (*a)[28] += chosen(p[2][c + 1u], p[2][c + 2u], p[3][c + 1u], p[3][c + 2u], g.s[0]) * g.g[0];
    (*a)[29] += chosen(p[2][c + 1u], p[2][c + 2u], p[3][c + 1u], p[3][c + 2u], g.s[1]) * g.g[1];
    (*a)[30] += chosen(p[2][c + 1u], p[2][c + 2u], p[3][c + 1u], p[3][c + 2u], g.s[2]) * g.g[2];
    (*a)[31] += chosen(p[2][c + 1u], p[2][c + 2u], p[3][c + 1u], p[3][c + 2u], g.s[3]) * g.g[3];
    (*a)[32] += chosen(p[2][c + 2u], p[2][c + 3u], p[3][c + 2u], p[3][c + 3u], g.s[0]) * g.g[0];
    (*a)[33] += chosen(p[2][c + 2u], p[2][c + 3u], p[3][c + 2u], p[3][c + 3u], g.s[1]) * g.g[1];
    (*a)[34] += chosen(p[2][c + 2u], p[2][c + 3u], p[3][c + 2u], p[3][c + 3u], g.s[2]) * g.g[2];
    (*a)[35] += chosen(p[2][c + 2u], p[2][c + 3u], p[3][c + 2u], p[3][c + 3u], g.s[3]) * g.g[3];
    (*a)[36] += g.g[0];
    (*a)[37] += g.g[1];
    (*a)[38] += g.g[2];
    (*a)[39] += g.g[3];
}

// Store 16 channels of patch row t of one chunk's partial sums (rows past the table, channels past OC dropped).
fn store_partial16(chunk: u32, rows: u32, t: u32, o0: u32, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>) {
    store_partial(chunk, rows, t, o0, q0, q1);
    store_partial(chunk, rows, t, o0 + 8u, q2, q3);
}

fn store_partial(chunk: u32, rows: u32, t: u32, o0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (t >= rows) {
        return;
    }
    let base = (chunk * rows + t) * P.out_c + o0;
    for (var q = 0u; q < 4u; q++) {
        if (o0 + q < P.out_c) {
            partials[base + q] = lo[q];
        }
        if (o0 + 4u + q < P.out_c) {
            partials[base + 4u + q] = hi[q];
        }
    }
}

// grid (ceil((k*k*IC + 1) * OC / 64)): sums the partials of all chunks.
@compute @workgroup_size(64)
fn conv2d_weight_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let e = (wg.y * nwg.x + wg.x) * 64u + lid;
    let kkc = P.k * P.k * P.in_c;
    let per_chunk = (kkc + 1u) * P.out_c;
    if (e >= per_chunk) {
        return;
    }
    var s = 0.0;
    for (var c = 0u; c < P.chunks; c++) {
        s += partials[c * per_chunk + e];
    }
    if (e < kkc * P.out_c) {
        dkernel[e] = s;
    } else {
        dbias[e - kkc * P.out_c] = s;
    }
}

// grid (ceil(IH*IW/64), B, ceil(IC/16)): one invocation per (input pixel, 16 input channels):
// dx[n, h, w, c] = sum over (di, dj, o) of dpre[n, i, j, o] * K[di, dj, c, o], where
// i*S = h + pad_h - di and j*S = w + pad_w - dj (with a stride, the taps that land between outputs
// are skipped). dL/dpre (a gather through the pool's choice when POOLED) is computed once per
// (di, dj, o) for the 16 channels: per channel that was the cost (32 input channels, batch 32:
// 654 ms per step on llvmpipe). Each channel sums in the same order as one invocation per channel.
@compute @workgroup_size(64)
fn conv2d_backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = wg.x * 64u + lid;
    let n = wg.y;
    let c0 = wg.z * 16u;
    if (p >= P.in_h * P.in_w) {
        return;
    }
    let h = p / P.in_w;
    let w = p % P.in_w;
    let out = (n * P.in_h * P.in_w + p) * P.in_c;
    // the kernel rows of the 16 channels (channels past IC read the last one; not stored)
    let last = vec4<u32>(P.in_c - 1u);
    let c1 = min(vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u), last);
    let c2 = min(vec4<u32>(c0) + vec4<u32>(4u, 5u, 6u, 7u), last);
    let c3 = min(vec4<u32>(c0) + vec4<u32>(8u, 9u, 10u, 11u), last);
    let c4 = min(vec4<u32>(c0) + vec4<u32>(12u, 13u, 14u, 15u), last);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    for (var di = 0u; di < P.k; di++) {
        let si = i32(h + P.pad_h) - i32(di);
        if (si < 0 || u32(si) % P.stride != 0u) {
            continue;
        }
        let i = si / i32(P.stride);
        if (i >= i32(P.out_h)) {
            continue;
        }
        for (var dj = 0u; dj < P.k; dj++) {
            let sj = i32(w + P.pad_w) - i32(dj);
            if (sj < 0 || u32(sj) % P.stride != 0u) {
                continue;
            }
            let j = sj / i32(P.stride);
            if (j >= i32(P.out_w)) {
                continue;
            }
            let ob = ((n * P.out_h + u32(i)) * P.out_w + u32(j)) * P.out_c;
            let tap = vec4<u32>((di * P.k + dj) * P.in_c);
            let k1 = (tap + c1) * P.out_c;
            let k2 = (tap + c2) * P.out_c;
            let k3 = (tap + c3) * P.out_c;
            let k4 = (tap + c4) * P.out_c;
            for (var o = 0u; o < P.out_c; o++) {
                let g = grad_at(n, u32(i), u32(j), ob, o);
                a1 += g * vec4<f32>(kernel[k1.x + o], kernel[k1.y + o], kernel[k1.z + o], kernel[k1.w + o]);
                a2 += g * vec4<f32>(kernel[k2.x + o], kernel[k2.y + o], kernel[k2.z + o], kernel[k2.w + o]);
                a3 += g * vec4<f32>(kernel[k3.x + o], kernel[k3.y + o], kernel[k3.z + o], kernel[k3.w + o]);
                a4 += g * vec4<f32>(kernel[k4.x + o], kernel[k4.y + o], kernel[k4.z + o], kernel[k4.w + o]);
            }
        }
    }
    store_dx4(out, c0, a1);
    store_dx4(out, c0 + 4u, a2);
    store_dx4(out, c0 + 8u, a3);
    store_dx4(out, c0 + 12u, a4);
}

// 4 channels of dx from channel c (channels past IC are dropped).
fn store_dx4(out: u32, c: u32, v: vec4<f32>) {
    for (var q = 0u; q < 4u; q++) {
        if (c + q < P.in_c) {
            dx[out + c + q] = v[q];
        }
    }
}

// ---- GPU shapes of the fused conv + relu + 2x2 max-pool (the kernel set for GPU adapters) ----
// The shapes above serve llvmpipe, where loads cost more than arithmetic and every invocation runs on
// the CPU; on a GPU their per-invocation register tiles leave too few invocations and their gathers do
// not coalesce. These give one invocation per output element, channels fastest (kernel loads coalesced,
// input loads broadcast across a channel group), and reduce across invocations in workgroup memory.
// Same results as the shapes above: same pooled output, same argmax (4 where the pooled value is 0),
// same partials layout.

// grid (ceil(OH/2 * OW/2 * OC / 256), B): one invocation per (pooled pixel, channel): the 4 conv outputs
// of its window, relu, the first maximum (strict >, row-major).
@compute @workgroup_size(256)
fn conv2d_relu_maxpool2_forward_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let out_ph = P.out_h / 2u;
    let out_pw = P.out_w / 2u;
    let e = wg.x * 256u + lid;
    let n = wg.y;
    if (e >= out_ph * out_pw * P.out_c) {
        return;
    }
    let o = e % P.out_c;
    let pix = e / P.out_c;
    let ph = pix / out_pw;
    let pw = pix % out_pw;
    let ih = i32(2u * ph) - i32(P.pad_h);
    let iw = i32(2u * pw) - i32(P.pad_w);
    let right = i32(P.in_c);
    let down = i32(P.in_w * P.in_c);
    var a = vec4<f32>(bias[o]);
    var t = 0u;
    for (var di = 0u; di < P.k; di++) {
        let h = ih + i32(di);
        let h0 = h >= 0 && h < i32(P.in_h);
        let h1 = h + 1 >= 0 && h + 1 < i32(P.in_h);
        for (var dj = 0u; dj < P.k; dj++) {
            let w = iw + i32(dj);
            let w0 = w >= 0 && w < i32(P.in_w);
            let w1 = w + 1 >= 0 && w + 1 < i32(P.in_w);
            let base = ((i32(n * P.in_h) + h) * i32(P.in_w) + w) * i32(P.in_c);
            for (var c = 0u; c < P.in_c; c++) {
                let at = base + i32(c);
                let v = vec4<f32>(xval(at, h0 && w0), xval(at + right, h0 && w1),
                                  xval(at + down, h1 && w0), xval(at + down + right, h1 && w1));
                a += v * kernel[t * P.out_c + o];
                t++;
            }
        }
    }
    pool_store_gpu(a, (n * out_ph * out_pw + pix) * P.out_c + o);
}

// relu + 2x2 max-pool of a window's 4 conv outputs a (row-major), stored at pooled element `out` with the
// first maximum's position (strict >; 4 where the pooled value is 0)
fn pool_store_gpu(a: vec4<f32>, out: u32) {
    var best = max(a.x, 0.0);
    var arg = 0u;
    let c1 = max(a.y, 0.0);
    let c2 = max(a.z, 0.0);
    let c3 = max(a.w, 0.0);
    if (c1 > best) { arg = 1u; best = c1; }
    if (c2 > best) { arg = 2u; best = c2; }
    if (c3 > best) { arg = 3u; best = c3; }
    if (best <= 0.0) { arg = 4u; }
    y[out] = best;
    argmax[out] = arg;
}

// k + 1 input rows of one example (every column and channel): the tiled forward's staged input (16 KiB)
var<workgroup> conv_rows: array<f32, 4096>;

// the staged input at `at`, 0 where not `ok` (the index clamped too: select reads both sides)
fn staged_x(at: i32, ok: bool) -> f32 {
    return select(0.0, conv_rows[min(u32(max(at, 0)), 4095u)], ok);
}

// conv2d_relu_maxpool2_forward_gpu with the input staged in workgroup memory (opt-in: `--gpu-tiles`;
// where (k + 1) * W * IC <= 4096). grid (OH/2, B): one workgroup per (pooled row, example) loads the k + 1
// input rows under it once (zeros for rows in the padding); then, looping by 256, one invocation per
// (pooled pixel of the row, channel) computes its window's 4 conv outputs as the untiled kernel does,
// reading the input from workgroup memory: the same products in the same order (bit-identical).
@compute @workgroup_size(256)
fn conv2d_relu_maxpool2_forward_tiled_gpu(@builtin(workgroup_id) wg: vec3<u32>,
                                          @builtin(local_invocation_index) lid: u32) {
    let out_ph = P.out_h / 2u;
    let out_pw = P.out_w / 2u;
    let ph = wg.x;
    let n = wg.y;
    let row = P.in_w * P.in_c;
    let ih = i32(2u * ph) - i32(P.pad_h);
    for (var j = lid; j < (P.k + 1u) * row; j += 256u) {
        let h = ih + i32(j / row);
        var v = 0.0;
        if (h >= 0 && h < i32(P.in_h)) {
            v = x[(n * P.in_h + u32(h)) * row + j % row];
        }
        conv_rows[j] = v;
    }
    workgroupBarrier();
    let right = i32(P.in_c);
    let down = i32(row);
    for (var e = lid; e < out_pw * P.out_c; e += 256u) {
        let o = e % P.out_c;
        let pw = e / P.out_c;
        let iw = i32(2u * pw) - i32(P.pad_w);
        var a = vec4<f32>(bias[o]);
        var t = 0u;
        for (var di = 0u; di < P.k; di++) {
            for (var dj = 0u; dj < P.k; dj++) {
                let w = iw + i32(dj);
                let w0 = w >= 0 && w < i32(P.in_w);
                let w1 = w + 1 >= 0 && w + 1 < i32(P.in_w);
                let base = i32(di) * down + w * i32(P.in_c);
                for (var c = 0u; c < P.in_c; c++) {
                    let at = base + i32(c);
                    let v = vec4<f32>(staged_x(at, w0), staged_x(at + right, w1),
                                      staged_x(at + down, w0), staged_x(at + down + right, w1));
                    a += v * kernel[t * P.out_c + o];
                    t++;
                }
            }
        }
        pool_store_gpu(a, ((n * out_ph + ph) * out_pw + pw) * P.out_c + o);
    }
}

// 8 lanes x 10 patch rows x 32 channels of partial sums (10 KiB)
var<workgroup> wgrad_lanes: array<f32, 2560>;

// The weight gradient of the fused conv, GPU shape. grid (chunks, ceil((k*k*IC + 1)/10), ceil(OC/32)),
// workgroups of 256 = 32 channels x 8 lanes. Chunk c covers the pooled positions
// [c * chunk_len, (c + 1) * chunk_len) of the flattened (n, ph, pw); each lane takes every 8th position
// and adds, for 10 patch rows, the input under the window position the pool chose times the pool's
// gradient. The 8 lanes are summed in workgroup memory and written in the partials layout above.
@compute @workgroup_size(256)
fn conv2d_weight_partials_pooled_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cl = lid % 32u;
    let lane = lid / 32u;
    let o = min(wg.z * 32u + cl, P.out_c - 1u);   // channels past OC compute a copy that is not stored
    let rows = P.k * P.k * P.in_c + 1u;
    let t0 = wg.y * 10u;
    // the 10 patch rows and their sums, as arrays indexed in constant-trip loops: spelled out as 10
    // statements, Chromium's compiler (Tint, SwiftShader) grows past 14 GB on this body; a GPU's
    // compiler unrolls the loops back into registers
    var tap: array<vec4<i32>, 10>;
    var acc: array<f32, 10>;
    for (var r = 0u; r < 10u; r++) {
        tap[r] = taps[t0 + r];
    }
    let out_ph = P.out_h / 2u;
    let out_pw = P.out_w / 2u;
    let first = wg.x * P.chunk_len;
    let end = min(first + P.chunk_len, P.batch * out_ph * out_pw);
    for (var p = first + lane; p < end; p += 8u) {
        let at = p * P.out_c + o;
        let s = argmax[at];
        if (s < 4u) {
            let g = dy[at];
            let pw = p % out_pw;
            let q = p / out_pw;
            let ph = q % out_ph;
            let n = q / out_ph;
            let ih = i32(2u * ph + (s >> 1u)) - i32(P.pad_h);
            let iw = i32(2u * pw + (s & 1u)) - i32(P.pad_w);
            let origin = ((i32(n * P.in_h) + ih) * i32(P.in_w) + iw) * i32(P.in_c);
            for (var r = 0u; r < 10u; r++) {
                acc[r] += g * row_value(tap[r], origin, ih, iw);
            }
        }
    }
    let b = lane * 320u + cl;
    for (var r = 0u; r < 10u; r++) {
        wgrad_lanes[b + 32u * r] = acc[r];
    }
    workgroupBarrier();
    for (var e = lid; e < 320u; e += 256u) {
        var s = 0.0;
        for (var l = 0u; l < 8u; l++) {
            s += wgrad_lanes[l * 320u + e];
        }
        let t = t0 + e / 32u;
        let c = wg.z * 32u + e % 32u;
        if (t < rows && c < P.out_c) {
            partials[(wg.x * rows + t) * P.out_c + c] = s;
        }
    }
}

var<workgroup> reduce_lanes: array<f32, 256>;

// grid (ceil((k*k*IC + 1) * OC / 32)), folded: sums the partials of all chunks, 32 outputs x 8 lanes per
// workgroup, each lane every 8th chunk, the lanes summed in workgroup memory.
@compute @workgroup_size(256)
fn conv2d_weight_reduce_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let e = (wg.y * nwg.x + wg.x) * 32u + lid % 32u;
    let lane = lid / 32u;
    let kkc = P.k * P.k * P.in_c;
    let per_chunk = (kkc + 1u) * P.out_c;
    var s = 0.0;
    if (e < per_chunk) {
        for (var c = lane; c < P.chunks; c += 8u) {
            s += partials[c * per_chunk + e];
        }
    }
    reduce_lanes[lid] = s;
    workgroupBarrier();
    if (lane == 0u && e < per_chunk) {
        var total = 0.0;
        for (var l = 0u; l < 8u; l++) {
            total += reduce_lanes[l * 32u + lid];
        }
        if (e < kkc * P.out_c) {
            dkernel[e] = total;
        } else {
            dbias[e - kkc * P.out_c] = total;
        }
    }
}
