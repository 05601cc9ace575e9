// Keras' RMSprop, after update_prologue.wgsl (this file is appended to it): one invocation per 4
// parameter elements, in Keras 3's order:
//   g = clip4(total_gradient4(g))             penalty gradient, then clipping (the prologue)
//   w = decay4(w)                             decoupled weight decay (the prologue)
//   v = rho * v + (1 - rho) * g^2
//   centered:  a = rho * a + (1 - rho) * g;  d = v - a^2 + eps      else  d = v + eps
//   inc = lr * g / sqrt(d)                    eps inside the square root, as Keras
//   momentum > 0:  mom = momentum * mom + inc;  w -= mom            else  w -= inc
//   w = prox4(w, lr / sqrt(d))                proximal L1 (only without momentum)
// lr is this step's learning rate, `step_sizes[state.batch].x`.

struct RmsPropParams {
    rho: f32, one_minus_rho: f32, momentum: f32, eps: f32,
    has_momentum: u32, centered: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(10) var<uniform> R: RmsPropParams;
@group(0) @binding(11) var<storage, read_write> velocity4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> momentum4: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> average4: array<vec4<f32>>;

// grid (ceil(n / 256)) folded, UPDATE_WG (64) invocations per workgroup, 4 elements per invocation
// (`update_lanes`).
@compute @workgroup_size(UPDATE_WG)
fn rmsprop_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
    let v0 = velocity4[q];
    let v = R.rho * v0 + R.one_minus_rho * (g * g);
    velocity4[q] = select(v0, v, live);
    var d = v + R.eps;
    if (R.centered != 0u) {
        let a0 = average4[q];
        let a = R.rho * a0 + R.one_minus_rho * g;
        average4[q] = select(a0, a, live);
        d = v - a * a + R.eps;
    }
    let inc = (lr * g) / sqrt(d);
    if (R.has_momentum != 0u) {
        let m0 = momentum4[q];
        let m = R.momentum * m0 + inc;
        momentum4[q] = select(m0, m, live);
        w = w - m;
    } else {
        w = w - inc;
        w = prox4(l.seg, w, lr / sqrt(d));
    }
    params4[q] = select(l.w0, w, live);
}
