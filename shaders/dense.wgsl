// Dense: y = act(x @ W + b), Keras layouts.
//   x [B, IN], W [IN, OUT], b [OUT], y [B, OUT], dy [B, OUT], dx [B, IN]
// Softmax on the last layer is not applied here: the layer emits logits and loss.wgsl fuses
// softmax + cross-entropy, as Keras does when it computes the loss from logits.
// Backward fuses relu'(y) (relu'(0) = 0); every gradient element is one invocation (a gather).

struct DenseParams {
    batch: u32, in_n: u32, out_n: u32, relu: u32,
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

fn dpre(i: u32) -> f32 {
    if (P.relu != 0u && !(y[i] > 0.0)) {
        return 0.0;
    }
    return dy[i];
}

fn global_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * 64u + lid;
}

// One invocation per output (n, o).
@compute @workgroup_size(64)
fn dense_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let idx = global_index(wg, nwg, lid);
    if (idx >= P.batch * P.out_n) {
        return;
    }
    let o = idx % P.out_n;
    let n = idx / P.out_n;
    var acc = bias[o];
    let xb = n * P.in_n;
    for (var i = 0u; i < P.in_n; i++) {
        acc += x[xb + i] * kernel[i * P.out_n + o];
    }
    if (P.relu != 0u) {
        acc = max(acc, 0.0);
    }
    y[idx] = acc;
}

// One invocation per kernel element (i, o): dW = sum over n of x[n, i] * dpre[n, o].
@compute @workgroup_size(64)
fn dense_backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let idx = global_index(wg, nwg, lid);
    if (idx >= P.in_n * P.out_n) {
        return;
    }
    let o = idx % P.out_n;
    let i = idx / P.out_n;
    var acc = 0.0;
    for (var n = 0u; n < P.batch; n++) {
        acc += x[n * P.in_n + i] * dpre(n * P.out_n + o);
    }
    dkernel[idx] = acc;
}

// One invocation per bias element o: db = sum over n of dpre[n, o].
@compute @workgroup_size(64)
fn dense_backward_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let o = global_index(wg, nwg, lid);
    if (o >= P.out_n) {
        return;
    }
    var acc = 0.0;
    for (var n = 0u; n < P.batch; n++) {
        acc += dpre(n * P.out_n + o);
    }
    dbias[o] = acc;
}

// One invocation per input element (n, i): dx = sum over o of W[i, o] * dpre[n, o].
@compute @workgroup_size(64)
fn dense_backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let idx = global_index(wg, nwg, lid);
    if (idx >= P.batch * P.in_n) {
        return;
    }
    let i = idx % P.in_n;
    let n = idx / P.in_n;
    var acc = 0.0;
    for (var o = 0u; o < P.out_n; o++) {
        acc += kernel[i * P.out_n + o] * dpre(n * P.out_n + o);
    }
    dx[idx] = acc;
}
