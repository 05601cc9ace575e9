// MaxPool2D, k x k window, stride k, padding `valid` (Keras default).
//   x      [B, IH, IW, C]  input
//   y      [B, OH, OW, C]  output, OH = IH / k, OW = IW / k
//   argmax [B, OH, OW, C]  u32 index (di * k + dj) of the FIRST maximum of the window in row-major order
//   dy     [B, OH, OW, C], dx [B, IH, IW, C]
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

@compute @workgroup_size(64)
fn maxpool_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let idx = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (idx >= P.batch * P.out_h * P.out_w * P.c) {
        return;
    }
    let c = idx % P.c;
    let pw = (idx / P.c) % P.out_w;
    let ph = (idx / (P.c * P.out_w)) % P.out_h;
    let n = idx / (P.c * P.out_w * P.out_h);
    var best = x[((n * P.in_h + ph * P.k) * P.in_w + pw * P.k) * P.c + c];
    var best_at = 0u;
    for (var di = 0u; di < P.k; di++) {
        for (var dj = 0u; dj < P.k; dj++) {
            let v = x[((n * P.in_h + ph * P.k + di) * P.in_w + pw * P.k + dj) * P.c + c];
            if (v > best) {
                best = v;
                best_at = di * P.k + dj;
            }
        }
    }
    y[idx] = best;
    argmax[idx] = best_at;
}

@compute @workgroup_size(64)
fn maxpool_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let idx = (wg.y * nwg.x + wg.x) * 64u + lid;
    if (idx >= P.batch * P.in_h * P.in_w * P.c) {
        return;
    }
    let c = idx % P.c;
    let w = (idx / P.c) % P.in_w;
    let h = (idx / (P.c * P.in_w)) % P.in_h;
    let n = idx / (P.c * P.in_w * P.in_h);
    let ph = h / P.k;
    let pw = w / P.k;
    var g = 0.0;
    if (ph < P.out_h && pw < P.out_w) {
        let o = ((n * P.out_h + ph) * P.out_w + pw) * P.c + c;
        if (argmax[o] == (h % P.k) * P.k + (w % P.k)) {
            g = dy[o];
        }
    }
    dx[idx] = g;
}
