// Adam in Keras' form, after update_prologue.wgsl (this file is appended to it): one invocation per 4
// parameter elements, in Keras 3's order:
//   g = clip4(total_gradient4(g))             penalty gradient, then clipping (the prologue)
//   w = decay4(w)                             decoupled weight decay (the prologue)
//   m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
//   w -= m * alpha / (sqrt(v) + eps)          eps on the uncorrected sqrt(v): Keras' form, not PyTorch's
//   w = prox4(w, alpha / (sqrt(v) + eps))     proximal L1 only: Adam's own per-element step size
// alpha = lr_t * sqrt(1 - beta2^t) / (1 - beta1^t) is `step_sizes[state.batch].x`. AdamW is this
// update with weight decay.

struct AdamParams {
    beta1: f32, beta2: f32, one_minus_beta1: f32, one_minus_beta2: f32,
    eps: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(10) var<uniform> A: AdamParams;
@group(0) @binding(11) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> v4: array<vec4<f32>>;

// grid (ceil(n / 256)) folded, UPDATE_WG (64) invocations per workgroup, 4 elements per invocation
// (`update_lanes`).
@compute @workgroup_size(UPDATE_WG)
fn adam_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let l = update_lanes(wg, nwg, lid);
    let q = l.q;
    let m0 = m4[q];
    let v0 = v4[q];
    let g = l.g;
    var w = l.w;
    let mi = m0 + (g - m0) * A.one_minus_beta1;
    let vi = v0 + (g * g - v0) * A.one_minus_beta2;
    let alpha = step_sizes[state.batch].x;
    w = w - (mi * alpha) / (sqrt(vi) + A.eps);
    w = prox4(l.seg, w, alpha / (sqrt(vi) + A.eps));
    if (l.ok) {
        m4[q] = select(m0, mi, l.live);
        v4[q] = select(v0, vi, l.live);
        params4[q] = select(l.w0, w, l.live);
    }
}
