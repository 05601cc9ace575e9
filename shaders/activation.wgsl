// Activation layers (Keras' Activation, ReLU, LeakyReLU, ELU), elementwise, as TensorFlow computes them:
//   func 0 relu        y = max(x, 0)                    y' = x > 0 ? 1 : 0
//   func 1 linear      y = x                            y' = 1
//   func 2 tanh        y = tanh(x)                      y' = 1 - y^2
//   func 3 sigmoid     y = 1 / (1 + exp(-x))            y' = y (1 - y)
//   func 4 elu         y = x > 0 ? x : alpha (e^x - 1)  y' = x > 0 ? 1 : alpha e^x
//   func 5 leaky_relu  y = x > 0 ? x : alpha x          y' = x > 0 ? 1 : alpha
// (Softmax, the model's last layer, is a view: the loss applies it.) One invocation per element, grid
// folded (workgroups of 64).

struct ActivationParams {
    n: u32, func: u32, alpha: f32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: ActivationParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * 64u + lid;
}

fn act(v: f32) -> f32 {
    switch P.func {
        case 0u: { return max(v, 0.0); }
        case 2u: { return tanh(v); }
        case 3u: { return 1.0 / (1.0 + exp(-v)); }
        case 4u: { return select(P.alpha * (exp(v) - 1.0), v, v > 0.0); }
        case 5u: { return select(P.alpha * v, v, v > 0.0); }
        default: { return v; }
    }
}

// f'(x), from the input and the output
fn slope(v: f32, out: f32) -> f32 {
    switch P.func {
        case 0u: { return select(0.0, 1.0, v > 0.0); }
        case 2u: { return 1.0 - out * out; }
        case 3u: { return out * (1.0 - out); }
        case 4u: { return select(P.alpha * exp(v), 1.0, v > 0.0); }
        case 5u: { return select(P.alpha, 1.0, v > 0.0); }
        default: { return 1.0; }
    }
}

@compute @workgroup_size(64)
fn activation_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i >= P.n) {
        return;
    }
    y[i] = act(x[i]);
}

@compute @workgroup_size(64)
fn activation_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i >= P.n) {
        return;
    }
    dx[i] = dy[i] * slope(x[i], y[i]);
}
