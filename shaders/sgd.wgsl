// Keras' SGD, after update_prologue.wgsl (this file is appended to it): one invocation per 4 parameter
// elements, in Keras 3's order:
//   g = clip4(total_gradient4(g))             penalty gradient, then clipping (the prologue)
//   w = decay4(w)                             decoupled weight decay (the prologue)
//   momentum > 0:  m = m * momentum - g * lr
//                  w += m                           (nesterov: w += m * momentum - g * lr)
//   else:          w -= g * lr
//   w = prox4(w, lr)                          proximal L1 (only without momentum: the step size is lr)
// lr is this step's learning rate, `step_sizes[state.batch].x`.

struct SgdParams {
    momentum: f32, nesterov: u32, has_momentum: u32, _pad0: u32,
}

@group(0) @binding(10) var<uniform> S: SgdParams;
@group(0) @binding(11) var<storage, read_write> momentum4: array<vec4<f32>>;

// grid (ceil(n / 256)) folded, UPDATE_WG (64) invocations per workgroup, 4 elements per invocation
// (`update_lanes`).
@compute @workgroup_size(UPDATE_WG)
fn sgd_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let l = update_lanes(wg, nwg, lid);
    if (!l.ok) {
        return;
    }
    let q = l.q;
    let live = l.live;
    let g = l.g;
    var w = l.w;
    let lr = step_sizes[state.batch].x;
    if (S.has_momentum != 0u) {
        let m0 = momentum4[q];
        let m = m0 * S.momentum - g * lr;
        if (S.nesterov != 0u) {
            w = w + (m * S.momentum - g * lr);
        } else {
            w = w + m;
        }
        momentum4[q] = select(m0, m, live);
    } else {
        w = w - g * lr;
        w = prox4(l.seg, w, vec4<f32>(lr));
    }
    params4[q] = select(l.w0, w, live);
}
