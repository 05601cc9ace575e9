// MaxPool2D, k x k window, stride k, padding `valid` (Keras default).
//   x      [B, IH, IW, C]  input
//   y      [B, OH, OW, C]  output, OH = IH / k, OW = IW / k
//   argmax [B, OH, OW, C]  u32 index (di * k + dj) of the FIRST maximum of the window in row-major order
//   dy     [B, OH, OW, C], dx [B, IH, IW, C]
// Grids carry the batch index in workgroup_id.y; each invocation loops over the channels of one pixel.
// Backward is a gather: each input element reads the argmax of the window that holds it.

struct PoolParams {
    batch: u32, in_h: u32, in_w: u32, c: u32,
    out_h: u32, out_w: u32, k: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> P: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

// grid (ceil(OH*OW/64), B): one invocation per output pixel
// GATE (pipeline-overridable): the pool's input is a relu output, and the backward applies relu' too:
// the window maximum is the relu output at argmax, so relu'(pre) there is (pooled value > 0).
override GATE: bool = false;

@compute @workgroup_size(64)
fn maxpool_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = wg.x * 64u + lid;
    let n = wg.y;
    if (p >= P.out_h * P.out_w) {
        return;
    }
    let ph = p / P.out_w;
    let pw = p % P.out_w;
    let out = (n * P.out_h * P.out_w + p) * P.c;
    let origin = ((n * P.in_h + ph * P.k) * P.in_w + pw * P.k) * P.c;
    for (var c = 0u; c < P.c; c++) {
        var best = x[origin + c];
        var best_at = 0u;
        for (var di = 0u; di < P.k; di++) {
            for (var dj = 0u; dj < P.k; dj++) {
                let v = x[origin + (di * P.in_w + dj) * P.c + c];
                if (v > best) {
                    best = v;
                    best_at = di * P.k + dj;
                }
            }
        }
        y[out + c] = best;
        argmax[out + c] = best_at;
    }
}

// grid (ceil(IH*IW/64), B): one invocation per input pixel
@compute @workgroup_size(64)
fn maxpool_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = wg.x * 64u + lid;
    let n = wg.y;
    if (p >= P.in_h * P.in_w) {
        return;
    }
    let h = p / P.in_w;
    let w = p % P.in_w;
    let ph = h / P.k;
    let pw = w / P.k;
    let local = (h % P.k) * P.k + (w % P.k);
    let out = (n * P.in_h * P.in_w + p) * P.c;
    let inside = ph < P.out_h && pw < P.out_w;
    let src = ((n * P.out_h + ph) * P.out_w + pw) * P.c;
    for (var c = 0u; c < P.c; c++) {
        var g = 0.0;
        if (inside && argmax[src + c] == local) {
            g = dy[src + c];
            if (GATE && !(y[src + c] > 0.0)) {
                g = 0.0;
            }
        }
        dx[out + c] = g;
    }
}
