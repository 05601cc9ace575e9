// The parameter update, over the flat parameter buffer (every tensor of the model, 64-float aligned).
// `segments` has one row per tensor: {start, len, l1, l2, proximal}.
//
// regularization_loss, one workgroup: reg[0] = sum over segments of l1 * sum|w| + l2 * sum w^2
//   (Keras' l1 / l2 / l1_l2 regularizers: a sum, no 1/2, not divided by the batch size).
// gradient_sumsq, one workgroup per segment (only with clipnorm / global_clipnorm):
//   sumsq[s] = sum over the tensor of g_total^2, g_total = g + the penalty gradient (what Keras clips)
// adam_update, one invocation per 4 parameter elements, fuses, in Keras 3's order:
//   g += l1 * sign(w) + 2 * l2 * w            penalty gradient (sign(0) = 0; no l1 term when proximal)
//   g = clip(g)                               clipnorm:   g * c / max(||g_tensor||, c)
//                                             global:     g * c * min(1 / ||g_all||, 1 / c)
//                                             clipvalue:  min(max(g, -c), c)
//   w -= w * weight_decay * lr                decoupled weight decay, before the Adam update
//   m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
//   w -= m * alpha / (sqrt(v) + eps)          eps on the uncorrected sqrt(v): Keras' form, not PyTorch's
//   w = sign(w) * max(|w| - l1 * alpha / (sqrt(v) + eps), 0)     proximal L1 only
// alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t) comes from `alphas[state.batch]`: the host computes it
// per step exactly as Keras does (float32 powf; the GPU's pow is an exp2/log2 approximation, and
// 1 - beta2^t cancels), one table per epoch.

struct Segment {
    start: u32, len: u32, l1: f32, l2: f32,
    proximal: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

struct AdamParams {
    n: u32, n_segments: u32, lr: f32, beta1: f32,
    beta2: f32, one_minus_beta1: f32, one_minus_beta2: f32, eps: f32,
    weight_decay: f32, clip_mode: u32, clip_value: f32, _pad0: u32,   // clip_mode: 0 none, 1 norm, 2 global, 3 value
}

struct State {
    step: u32,
    batch: u32,
}

@group(0) @binding(0) var<uniform> P: AdamParams;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
// A uniform (at most 2048 tensors): on llvmpipe uniform loads cost a third of storage loads.
@group(0) @binding(2) var<uniform> segments: array<Segment, 2048>;
@group(0) @binding(3) var<storage, read> state: State;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;
@group(0) @binding(7) var<storage, read_write> reg: array<f32>;
@group(0) @binding(8) var<storage, read> alphas: array<f32>;     // [steps of this epoch]
@group(0) @binding(9) var<storage, read_write> sumsq: array<f32>; // [segments]
// adam_update works on 4 elements at a time (4 loads for the price of one per-lane loop on llvmpipe):
// the same buffers as params, grads, m and v, as vec4 arrays (sized to whole vec4s: 64-element padded)
@group(0) @binding(10) var<storage, read_write> params4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> grads4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> v4: array<vec4<f32>>;

var<workgroup> partial: array<f32, 256>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    return partial[0];
}

// The gradient Keras' optimizer sees for element i of segment seg (weights w): data + penalty.
fn total_gradient(seg: Segment, g: f32, w: f32) -> f32 {
    return total_gradient4(seg, vec4<f32>(g), vec4<f32>(w)).x;
}

// total_gradient for 4 elements of one tensor (the proximal step replaces the l1 gradient).
fn total_gradient4(seg: Segment, g: vec4<f32>, w: vec4<f32>) -> vec4<f32> {
    let l1 = select(seg.l1, 0.0, seg.proximal != 0u);
    return g + l1 * sign(w) + 2.0 * seg.l2 * w;
}

@compute @workgroup_size(256)
fn regularization_loss(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var s = 0u; s < P.n_segments; s++) {
        let seg = segments[s];
        for (var i = lid; i < seg.len; i += 256u) {
            let w = params[seg.start + i];
            acc += seg.l1 * abs(w) + seg.l2 * w * w;
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        reg[0] = total;
    }
}

// grid (n_segments): one workgroup per tensor
@compute @workgroup_size(256)
fn gradient_sumsq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (wg.x >= P.n_segments) {
        return;
    }
    let seg = segments[wg.x];
    var acc = 0.0;
    for (var i = lid; i < seg.len; i += 256u) {
        let g = total_gradient(seg, grads[seg.start + i], params[seg.start + i]);
        acc += g * g;
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        sumsq[wg.x] = total;
    }
}

// grid (ceil(n / 64)) folded, 16 invocations per workgroup, 4 elements (a vec4) per invocation: a
// workgroup covers 64 elements, and since tensors start 64-element aligned it lies inside one tensor (or
// the padding after it), found once per workgroup. Elements past the tensor's end keep their values.
@compute @workgroup_size(16)
fn adam_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i0 = (wg.y * nwg.x + wg.x) * 64u;
    var s = P.n_segments;
    for (var k = 0u; k < P.n_segments; k++) {
        let start = segments[k].start;
        if (i0 >= start && i0 < start + segments[k].len) {
            s = k;
        }
    }
    let e = i0 + 4u * lid;   // first element of this invocation
    if (s == P.n_segments || e >= P.n) {
        return;   // alignment padding between tensors
    }
    let seg = segments[s];
    let live = (vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(seg.start + seg.len);
    let q = e / 4u;
    let w0 = params4[q];
    var w = w0;
    let m0 = m4[q];
    let v0 = v4[q];
    var g = total_gradient4(seg, grads4[q], w);
    if (P.clip_mode == 1u) {
        let l2sum = sumsq[s];
        var l2norm = l2sum;
        if (l2sum > 0.0) {
            l2norm = sqrt(l2sum);
        }
        g = (g * P.clip_value) / max(l2norm, P.clip_value);
    } else if (P.clip_mode == 2u) {
        var total = 0.0;
        for (var k = 0u; k < P.n_segments; k++) {
            total += sumsq[k];
        }
        let use_norm = sqrt(total);
        g = g * (P.clip_value * min(1.0 / use_norm, 1.0 / P.clip_value));
    } else if (P.clip_mode == 3u) {
        g = min(max(g, vec4<f32>(-P.clip_value)), vec4<f32>(P.clip_value));
    }
    if (P.weight_decay != 0.0) {
        w -= w * P.weight_decay * P.lr;
    }
    let mi = m0 + (g - m0) * P.one_minus_beta1;
    let vi = v0 + (g * g - v0) * P.one_minus_beta2;
    let alpha = alphas[state.batch];
    w = w - (mi * alpha) / (sqrt(vi) + P.eps);
    if (seg.proximal != 0u) {
        let threshold = seg.l1 * (alpha / (sqrt(vi) + P.eps));
        w = sign(w) * max(abs(w) - threshold, vec4<f32>(0.0));
    }
    m4[q] = select(m0, mi, live);
    v4[q] = select(v0, vi, live);
    params4[q] = select(w0, w, live);
}
