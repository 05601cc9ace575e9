// Weight constraints, run as fused passes right after the optimizer step (Keras' BaseOptimizer.apply order).
//
// clip_by_value, one invocation per element of w[start .. start + len]:
//   w = min(max(w, lo), hi)        (non_neg is the special case `w >= 0 ? w : 0`, kind 1; kind 2: none,
//                                  a model of a K-model step without this pass)
// norm_constraint, one invocation per group: the tensor (Keras layout, up to 4 axes) is split into
// groups over the kept axes; n = sqrt(sum w^2) over the reduced axes (Keras' `axis`), eps = 1e-7:
//   kind 0 unit_norm:     w = w / (eps + n)
//   kind 1 max_norm:      w = w * (clip(n, 0, max) / (eps + n))
//   kind 2 min_max_norm:  w = w * ((rate * clip(n, min, max) + (1 - rate) * n) / (eps + n))
//   kind 3: none (a model of a K-model step without this pass)

struct ClipParams {
    start: u32, len: u32, lo: f32, hi: f32,
    kind: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

struct NormParams {
    start: u32, n_groups: u32, n_reduce: u32, kind: u32,
    min_value: f32, max_value: f32, rate: f32, eps: f32,
    kept_size: vec4<u32>,     // sizes of the kept axes (1 where unused), innermost last
    kept_stride: vec4<u32>,   // element strides of those axes
    red_size: vec4<u32>,      // sizes of the reduced axes (1 where unused), innermost last
    red_stride: vec4<u32>,
}

@group(0) @binding(0) var<uniform> C: ClipParams;
@group(0) @binding(1) var<uniform> N: NormParams;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;

@compute @workgroup_size(64)
fn clip_by_value(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (i >= C.len || C.kind == 2u) {
        return;
    }
    let w = params[C.start + i];
    if (C.kind == 1u) {
        params[C.start + i] = select(0.0, w, w >= 0.0);
    } else {
        params[C.start + i] = min(max(w, C.lo), C.hi);
    }
}

fn offset_of(index: u32, size: vec4<u32>, stride: vec4<u32>) -> u32 {
    var rest = index;
    var off = 0u;
    for (var a = 3; a >= 0; a--) {
        off += (rest % size[a]) * stride[a];
        rest /= size[a];
    }
    return off;
}

@compute @workgroup_size(64)
fn norm_constraint(@builtin(global_invocation_id) gid: vec3<u32>) {
    let g = gid.x;
    if (g >= N.n_groups || N.kind == 3u) {
        return;
    }
    let base = N.start + offset_of(g, N.kept_size, N.kept_stride);
    var sq = 0.0;
    for (var r = 0u; r < N.n_reduce; r++) {
        let w = params[base + offset_of(r, N.red_size, N.red_stride)];
        sq += w * w;
    }
    let norm = sqrt(sq);
    var desired = 0.0;
    if (N.kind == 1u) {
        desired = clamp(norm, 0.0, N.max_value);
    } else if (N.kind == 2u) {
        desired = N.rate * clamp(norm, N.min_value, N.max_value) + (1.0 - N.rate) * norm;
    }
    for (var r = 0u; r < N.n_reduce; r++) {
        let at = base + offset_of(r, N.red_size, N.red_stride);
        let w = params[at];
        if (N.kind == 0u) {
            params[at] = w / (N.eps + norm);
        } else {
            params[at] = w * (desired / (N.eps + norm));
        }
    }
}
