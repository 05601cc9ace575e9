// The parameter update, over the flat parameter buffer (every tensor of the model, 64-float aligned).
//
// regularization_loss, one workgroup: reg[0] = sum over segments of l1 * sum|w| + l2 * sum w^2
//   (Keras' l1 / l2 / l1_l2 regularizers: a sum, no 1/2, not divided by the batch size).
// adam_update, one invocation per parameter element, fuses:
//   g += l1 * sign(w) + 2 * l2 * w            (the penalty gradient; sign(0) = 0)
//   w -= w * weight_decay * lr                (decoupled weight decay, Keras 3 order: before Adam)
//   m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
//   alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t),  t = step + 1, from `alphas[state.batch]`: the host
//           computes it per step exactly as Keras does (float32 powf; the GPU's pow is an exp2/log2
//           approximation, and 1 - beta2^t cancels), one table per epoch
//   w -= m * alpha / (sqrt(v) + eps)          (eps on the uncorrected sqrt(v): Keras' form, not PyTorch's)
// The penalty of element i comes from the segment table: a handful of {start, len, l1, l2} rows.

struct Segment {
    start: u32, len: u32, l1: f32, l2: f32,
}

struct AdamParams {
    n: u32, n_segments: u32, lr: f32, beta1: f32,
    beta2: f32, one_minus_beta1: f32, one_minus_beta2: f32, eps: f32,
    weight_decay: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

struct State {
    step: u32,
    batch: u32,
}

@group(0) @binding(0) var<uniform> P: AdamParams;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read> segments: array<Segment>;
@group(0) @binding(3) var<storage, read> state: State;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;
@group(0) @binding(7) var<storage, read_write> reg: array<f32>;
@group(0) @binding(8) var<storage, read> alphas: array<f32>;     // [steps of this epoch]

var<workgroup> partial: array<f32, 256>;

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
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        reg[0] = partial[0];
    }
}

@compute @workgroup_size(64)
fn adam_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (i >= P.n) {
        return;
    }
    var w = params[i];
    var g = grads[i];
    for (var s = 0u; s < P.n_segments; s++) {
        let seg = segments[s];
        if (i >= seg.start && i < seg.start + seg.len) {
            g += seg.l1 * sign(w) + 2.0 * seg.l2 * w;
        }
    }
    if (P.weight_decay != 0.0) {
        w -= w * P.weight_decay * P.lr;
    }
    let mi = m[i] + (g - m[i]) * P.one_minus_beta1;
    let vi = v[i] + (g * g - v[i]) * P.one_minus_beta2;
    let alpha = alphas[state.batch];
    m[i] = mi;
    v[i] = vi;
    params[i] = w - (mi * alpha) / (sqrt(vi) + P.eps);
}
