// Pooling: MaxPooling2D, AveragePooling2D and the global poolings (one window over the whole input).
// kh x kw windows at strides (sh, sw); window (ph, pw) starts at input row ph*sh - pad_h and column
// pw*sw - pad_w (TensorFlow's `same` padding: pad_h rows above, any extra one below). Windows cover
// only the input's cells: the max ignores the padding, the average divides by the cells inside.
//   x      [B, IH, IW, C]  input
//   y      [B, OH, OW, C]  output
//   argmax [B, OH, OW, C]  u32 index (di * kw + dj) of the FIRST maximum of the window in row-major order
//   dy     [B, OH, OW, C], dx [B, IH, IW, C]
// One invocation per output element (forward) or input element (backward, a gather over the windows
// that hold it: no atomics); the batch index is workgroup_id.y.

struct PoolParams {
    batch: u32, in_h: u32, in_w: u32, c: u32,
    out_h: u32, out_w: u32, kh: u32, kw: u32,
    sh: u32, sw: u32, pad_h: u32, pad_w: u32,
}

@group(0) @binding(0) var<uniform> P: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

// GATE (pipeline-overridable, max-pool only): the pool's input is a relu output, and the backward
// applies relu' too: the window maximum is the relu output at argmax, so relu'(pre) there is
// (pooled value > 0).
override GATE: bool = false;

// The window cells inside the input, one axis: [lo, hi) of the window offsets for window `p`.
fn cells(p: u32, s: u32, pad: u32, k: u32, n: u32) -> vec2<u32> {
    let top = i32(p * s) - i32(pad);
    let lo = u32(max(-top, 0));
    let hi = u32(clamp(i32(n) - top, 0, i32(k)));
    return vec2<u32>(lo, max(hi, lo));
}

// Output element e of image n: its channel, the window's cells inside the input (row and column offset
// ranges) and the input offset of window cell (0, 0), which may lie in the padding.
struct Window {
    c: u32,
    rows: vec2<u32>,
    cols: vec2<u32>,
    origin: i32,
}

fn window(e: u32, n: u32) -> Window {
    let c = e % P.c;
    let p = e / P.c;
    let ph = p / P.out_w;
    let pw = p % P.out_w;
    let origin = ((i32(n * P.in_h) + i32(ph * P.sh) - i32(P.pad_h)) * i32(P.in_w)
                  + i32(pw * P.sw) - i32(P.pad_w)) * i32(P.c) + i32(c);
    return Window(c, cells(ph, P.sh, P.pad_h, P.kh, P.in_h), cells(pw, P.sw, P.pad_w, P.kw, P.in_w), origin);
}

// x at window cell (di, dj).
fn at(w: Window, di: u32, dj: u32) -> f32 {
    return x[u32(w.origin + i32((di * P.in_w + dj) * P.c))];
}

// grid (ceil(OH*OW*C/64), B): one invocation per output element
@compute @workgroup_size(64)
fn maxpool_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wg.x * 64u + lid;
    let n = wg.y;
    if (e >= P.out_h * P.out_w * P.c) {
        return;
    }
    let win = window(e, n);
    let rows = win.rows;
    let cols = win.cols;
    var best = at(win, rows.x, cols.x);
    var best_at = rows.x * P.kw + cols.x;
    for (var di = rows.x; di < rows.y; di++) {
        for (var dj = cols.x; dj < cols.y; dj++) {
            let v = at(win, di, dj);
            if (v > best) {
                best = v;
                best_at = di * P.kw + dj;
            }
        }
    }
    y[n * P.out_h * P.out_w * P.c + e] = best;
    argmax[n * P.out_h * P.out_w * P.c + e] = best_at;
}

// The windows that hold input row (or column) `h`, one axis: [first, end) of the output indices.
fn windows(h: u32, s: u32, pad: u32, k: u32, out: u32) -> vec2<u32> {
    let t = i32(h + pad);
    let first = max(t - i32(k) + i32(s), 0) / i32(s);   // ceil((t - k + 1) / s), at least 0
    let last = min(t / i32(s), i32(out) - 1);
    return vec2<u32>(u32(first), u32(max(last + 1, first)));
}

// Input element e: (channel, row, column, the output rows and columns whose windows hold it).
struct Holders {
    c: u32,
    h: u32,
    w: u32,
    rows: vec2<u32>,
    cols: vec2<u32>,
}

fn holders(e: u32) -> Holders {
    let c = e % P.c;
    let p = e / P.c;
    let h = p / P.in_w;
    let w = p % P.in_w;
    return Holders(c, h, w, windows(h, P.sh, P.pad_h, P.kh, P.out_h), windows(w, P.sw, P.pad_w, P.kw, P.out_w));
}

// grid (ceil(IH*IW*C/64), B): one invocation per input element, summing the gradient of each window
// whose saved argmax is this cell.
@compute @workgroup_size(64)
fn maxpool_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wg.x * 64u + lid;
    let n = wg.y;
    if (e >= P.in_h * P.in_w * P.c) {
        return;
    }
    let at = holders(e);
    var g = 0.0;
    for (var ph = at.rows.x; ph < at.rows.y; ph++) {
        for (var pw = at.cols.x; pw < at.cols.y; pw++) {
            let local = (at.h + P.pad_h - ph * P.sh) * P.kw + (at.w + P.pad_w - pw * P.sw);
            let src = ((n * P.out_h + ph) * P.out_w + pw) * P.c + at.c;
            if (argmax[src] == local && !(GATE && !(y[src] > 0.0))) {
                g += dy[src];
            }
        }
    }
    dx[n * P.in_h * P.in_w * P.c + e] = g;
}

// grid (ceil(OH*OW*C/64), B): one invocation per output element, the mean of its window's cells
@compute @workgroup_size(64)
fn avgpool_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wg.x * 64u + lid;
    let n = wg.y;
    if (e >= P.out_h * P.out_w * P.c) {
        return;
    }
    let win = window(e, n);
    var s = 0.0;
    for (var di = win.rows.x; di < win.rows.y; di++) {
        for (var dj = win.cols.x; dj < win.cols.y; dj++) {
            s += at(win, di, dj);
        }
    }
    y[n * P.out_h * P.out_w * P.c + e] = s / f32((win.rows.y - win.rows.x) * (win.cols.y - win.cols.x));
}

// grid (ceil(IH*IW*C/64), B): one invocation per input element, the gradient of each window that holds
// it divided by that window's cell count
@compute @workgroup_size(64)
fn avgpool_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = wg.x * 64u + lid;
    let n = wg.y;
    if (e >= P.in_h * P.in_w * P.c) {
        return;
    }
    let at = holders(e);
    var g = 0.0;
    for (var ph = at.rows.x; ph < at.rows.y; ph++) {
        let r = cells(ph, P.sh, P.pad_h, P.kh, P.in_h);
        for (var pw = at.cols.x; pw < at.cols.y; pw++) {
            let q = cells(pw, P.sw, P.pad_w, P.kw, P.in_w);
            let src = ((n * P.out_h + ph) * P.out_w + pw) * P.c + at.c;
            g += dy[src] / f32((r.y - r.x) * (q.y - q.x));
        }
    }
    dx[n * P.in_h * P.in_w * P.c + e] = g;
}
