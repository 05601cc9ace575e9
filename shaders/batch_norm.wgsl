// BatchNormalization over the last axis (channels), as Keras computes it with TensorFlow:
//   training:  mean, var = the batch's (two passes: var = mean((x - mean)^2), biased), over the
//              `rows` positions (batch x height x width) of each channel; the moving statistics become
//              moving * momentum + batch * (1 - momentum) in the forward pass
//   inference: mean, var = the moving statistics
//   y = x * inv + (beta - mean * inv),  inv = gamma / sqrt(var + epsilon)
// Layouts: x, y, dy, dx [rows, C]. `w` is the layer's span of the parameters (gamma, beta, moving mean,
// moving variance at the uniform's offsets; no gamma: 1, no beta: 0), `g` its span of the gradients.
// `stats` [4, C]: the batch's mean and 1/sqrt(var + eps) (forward), then the sums of dy and of
// dy * xhat (backward). The per-channel reductions run one workgroup per channel, lanes striding over
// the rows, summed in workgroup memory.

struct BnParams {
    rows: u32, c: u32, training: u32, has_gamma: u32,
    has_beta: u32, gamma_at: u32, beta_at: u32, mean_at: u32,
    var_at: u32, momentum: f32, one_minus_momentum: f32, epsilon: f32,
}

@group(0) @binding(0) var<uniform> P: BnParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> g: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

var<workgroup> lanes: array<f32, 64>;
var<workgroup> lanes2: array<f32, 64>;

// The sum of `lanes` (and `lanes2`) over the workgroup, in lane 0.
fn reduce(lid: u32) {
    for (var s = 32u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) {
            lanes[lid] += lanes[lid + s];
            lanes2[lid] += lanes2[lid + s];
        }
    }
    workgroupBarrier();
}

fn gamma(c: u32) -> f32 {
    return select(1.0, w[P.gamma_at + c], P.has_gamma != 0u);
}

fn beta(c: u32) -> f32 {
    return select(0.0, w[P.beta_at + c], P.has_beta != 0u);
}

// grid (C): the batch's mean and variance of channel wg.x; updates its moving statistics.
@compute @workgroup_size(64)
fn bn_stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.x;
    var s = 0.0;
    for (var r = lid; r < P.rows; r += 64u) {
        s += x[r * P.c + c];
    }
    lanes[lid] = s;
    lanes2[lid] = 0.0;
    reduce(lid);
    let mean = lanes[0] / f32(P.rows);
    workgroupBarrier();
    var q = 0.0;
    for (var r = lid; r < P.rows; r += 64u) {
        let d = x[r * P.c + c] - mean;
        q += d * d;
    }
    lanes[lid] = q;
    reduce(lid);
    if (lid == 0u) {
        let variance = lanes[0] / f32(P.rows);
        stats[c] = mean;
        stats[P.c + c] = 1.0 / sqrt(variance + P.epsilon);
        w[P.mean_at + c] = w[P.mean_at + c] * P.momentum + mean * P.one_minus_momentum;
        w[P.var_at + c] = w[P.var_at + c] * P.momentum + variance * P.one_minus_momentum;
    }
}

// grid (ceil(rows*C/64) folded): one invocation per element.
@compute @workgroup_size(64)
fn bn_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (e >= P.rows * P.c) {
        return;
    }
    let c = e % P.c;
    var mean: f32;
    var inv: f32;
    if (P.training != 0u) {
        mean = stats[c];
        inv = stats[P.c + c] * gamma(c);
    } else {
        mean = w[P.mean_at + c];
        inv = gamma(c) / sqrt(w[P.var_at + c] + P.epsilon);
    }
    y[e] = x[e] * inv + (beta(c) - mean * inv);
}

// grid (C): the sums of dy and dy * xhat of channel wg.x: dbeta and dgamma.
@compute @workgroup_size(64)
fn bn_backward_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wg.x;
    let mean = stats[c];
    let inv_std = stats[P.c + c];
    var sg = 0.0;
    var sgx = 0.0;
    for (var r = lid; r < P.rows; r += 64u) {
        let at = r * P.c + c;
        sg += dy[at];
        sgx += dy[at] * ((x[at] - mean) * inv_std);
    }
    lanes[lid] = sg;
    lanes2[lid] = sgx;
    reduce(lid);
    if (lid == 0u) {
        stats[2u * P.c + c] = lanes[0];
        stats[3u * P.c + c] = lanes2[0];
        if (P.has_gamma != 0u) {
            g[P.gamma_at + c] = lanes2[0];
        }
        if (P.has_beta != 0u) {
            g[P.beta_at + c] = lanes[0];
        }
    }
}

// grid (ceil(rows*C/64) folded): dx = gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat)).
@compute @workgroup_size(64)
fn bn_backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let e = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (e >= P.rows * P.c) {
        return;
    }
    let c = e % P.c;
    let inv_std = stats[P.c + c];
    let xhat = (x[e] - stats[c]) * inv_std;
    let n = f32(P.rows);
    dx[e] = gamma(c) * inv_std * (dy[e] - stats[2u * P.c + c] / n - xhat * (stats[3u * P.c + c] / n));
}
