// Conv2D, stride 1, square k x k kernel, padding `valid` (pad = 0) or `same` (pad = (k-1)/2),
// cross-correlation as Keras computes it. Layouts are Keras' own:
//   x  [B, IH, IW, IC]   NHWC input
//   K  [k, k, IC, OC]    kernel
//   b  [OC]              bias
//   y  [B, OH, OW, OC]   output after activation
// Forward fuses bias + activation. The backward kernels fuse the activation derivative:
// dpre = dy * relu'(y) with relu'(0) = 0 (y > 0 exactly when pre > 0), or dpre = dy when linear.
// Backward passes are gathers (one invocation or one workgroup per gradient element): no atomics.

struct ConvParams {
    batch: u32, in_h: u32, in_w: u32, in_c: u32,
    out_h: u32, out_w: u32, out_c: u32, k: u32,
    pad: u32, relu: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> kernel: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dkernel: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

fn flat_id(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}

// dL/dpre at output element o_idx (gates by the activation derivative).
fn dpre(o_idx: u32) -> f32 {
    let g = dy[o_idx];
    if (P.relu != 0u && !(y[o_idx] > 0.0)) {
        return 0.0;
    }
    return g;
}

// One invocation per output element (n, i, j, o).
@compute @workgroup_size(64)
fn conv2d_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let idx = flat_id(wg, nwg) * WG + lid;
    let total = P.batch * P.out_h * P.out_w * P.out_c;
    if (idx >= total) {
        return;
    }
    let o = idx % P.out_c;
    let j = (idx / P.out_c) % P.out_w;
    let i = (idx / (P.out_c * P.out_w)) % P.out_h;
    let n = idx / (P.out_c * P.out_w * P.out_h);
    var acc = bias[o];
    for (var di = 0u; di < P.k; di++) {
        let ih = i32(i + di) - i32(P.pad);
        if (ih < 0 || ih >= i32(P.in_h)) {
            continue;
        }
        for (var dj = 0u; dj < P.k; dj++) {
            let iw = i32(j + dj) - i32(P.pad);
            if (iw < 0 || iw >= i32(P.in_w)) {
                continue;
            }
            let xb = ((n * P.in_h + u32(ih)) * P.in_w + u32(iw)) * P.in_c;
            let kb = (di * P.k + dj) * P.in_c * P.out_c + o;
            for (var c = 0u; c < P.in_c; c++) {
                acc += x[xb + c] * kernel[kb + c * P.out_c];
            }
        }
    }
    if (P.relu != 0u) {
        acc = max(acc, 0.0);
    }
    y[idx] = acc;
}

// Sum the 64 per-invocation partials of a workgroup; result valid in partial[0].
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    return partial[0];
}

// One workgroup per kernel element (di, dj, c, o): dK = sum over (n, i, j) of x[n, i+di-pad, j+dj-pad, c] * dpre[n, i, j, o].
@compute @workgroup_size(64)
fn conv2d_backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let e = flat_id(wg, nwg);
    let total = P.k * P.k * P.in_c * P.out_c;
    if (e >= total) {
        return;
    }
    let o = e % P.out_c;
    let c = (e / P.out_c) % P.in_c;
    let dj = (e / (P.out_c * P.in_c)) % P.k;
    let di = e / (P.out_c * P.in_c * P.k);
    let positions = P.batch * P.out_h * P.out_w;
    var acc = 0.0;
    for (var m = lid; m < positions; m += WG) {
        let j = m % P.out_w;
        let i = (m / P.out_w) % P.out_h;
        let n = m / (P.out_w * P.out_h);
        let ih = i32(i + di) - i32(P.pad);
        let iw = i32(j + dj) - i32(P.pad);
        if (ih < 0 || ih >= i32(P.in_h) || iw < 0 || iw >= i32(P.in_w)) {
            continue;
        }
        let g = dpre(m * P.out_c + o);
        acc += x[((n * P.in_h + u32(ih)) * P.in_w + u32(iw)) * P.in_c + c] * g;
    }
    let s = workgroup_sum(lid, acc);
    if (lid == 0u) {
        dkernel[e] = s;
    }
}

// One workgroup per output channel o: db = sum over (n, i, j) of dpre[n, i, j, o].
@compute @workgroup_size(64)
fn conv2d_backward_bias(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let o = flat_id(wg, nwg);
    if (o >= P.out_c) {
        return;
    }
    let positions = P.batch * P.out_h * P.out_w;
    var acc = 0.0;
    for (var m = lid; m < positions; m += WG) {
        acc += dpre(m * P.out_c + o);
    }
    let s = workgroup_sum(lid, acc);
    if (lid == 0u) {
        dbias[o] = s;
    }
}

// One invocation per input element (n, h, w, c): dx = sum over (di, dj, o) of dpre[n, h+pad-di, w+pad-dj, o] * K[di, dj, c, o].
@compute @workgroup_size(64)
fn conv2d_backward_input(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let idx = flat_id(wg, nwg) * WG + lid;
    let total = P.batch * P.in_h * P.in_w * P.in_c;
    if (idx >= total) {
        return;
    }
    let c = idx % P.in_c;
    let w = (idx / P.in_c) % P.in_w;
    let h = (idx / (P.in_c * P.in_w)) % P.in_h;
    let n = idx / (P.in_c * P.in_w * P.in_h);
    var acc = 0.0;
    for (var di = 0u; di < P.k; di++) {
        let i = i32(h + P.pad) - i32(di);
        if (i < 0 || i >= i32(P.out_h)) {
            continue;
        }
        for (var dj = 0u; dj < P.k; dj++) {
            let j = i32(w + P.pad) - i32(dj);
            if (j < 0 || j >= i32(P.out_w)) {
                continue;
            }
            let ob = ((n * P.out_h + u32(i)) * P.out_w + u32(j)) * P.out_c;
            let kb = ((di * P.k + dj) * P.in_c + c) * P.out_c;
            for (var o = 0u; o < P.out_c; o++) {
                acc += dpre(ob + o) * kernel[kb + o];
            }
        }
    }
    dx[idx] = acc;
}
