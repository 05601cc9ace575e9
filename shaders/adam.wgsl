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

// grid (ceil(n / 64)) folded, 16 invocations per workgroup, 4 elements (a vec4) per invocation: a
// workgroup covers 64 elements, and since tensors start 64-element aligned it lies inside one tensor (or
// the padding after it), found once per workgroup. Elements past the tensor's end keep their values.
@compute @workgroup_size(16)
fn adam_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i0 = (wg.y * nwg.x + wg.x) * 64u;
    let s = segment_of(i0);
    let e = i0 + 4u * lid;   // first element of this invocation
    if (s == U.n_segments || e >= U.n) {
        return;   // alignment padding between tensors
    }
    let seg = segments[s];
    let live = (vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(seg.start + seg.len);
    let q = e / 4u;
    let w0 = params4[q];
    let m0 = m4[q];
    let v0 = v4[q];
    let g = clip4(s, total_gradient4(seg, grads4[q], w0));
    var w = decay4(w0);
    let mi = m0 + (g - m0) * A.one_minus_beta1;
    let vi = v0 + (g * g - v0) * A.one_minus_beta2;
    let alpha = step_sizes[state.batch].x;
    w = w - (mi * alpha) / (sqrt(vi) + A.eps);
    w = prox4(seg, w, alpha / (sqrt(vi) + A.eps));
    m4[q] = select(m0, mi, live);
    v4[q] = select(v0, vi, live);
    params4[q] = select(w0, w, live);
}
