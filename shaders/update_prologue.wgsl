// The prologue of every optimizer's update, over the flat parameter buffer (every tensor of the model,
// 64-float aligned). An optimizer's shader is this file followed by its own (adam.wgsl); these entry
// points also run on their own. `segments` has one row per trainable tensor: {start, len, l1, l2,
// proximal}.
//
// regularization_loss, one workgroup: reg[0] = sum over segments of l1 * sum|w| + l2 * sum w^2
//   (Keras' l1 / l2 / l1_l2 regularizers: a sum, no 1/2, not divided by the batch size).
// gradient_sumsq, one workgroup per segment (only with clipnorm / global_clipnorm):
//   sumsq[s] = sum over the tensor of g_total^2, g_total = g + the penalty gradient (what Keras clips)
// For the optimizer's update, in Keras 3's order (BaseOptimizer.apply):
//   total_gradient4   g += l1 * sign(w) + 2 * l2 * w     penalty gradient (sign(0) = 0; no l1 term when proximal)
//   clip4             clipnorm:   g * c / max(||g_tensor||, c)
//                     global:     g * c * min(1 / ||g_all||, 1 / c)
//                     clipvalue:  min(max(g, -c), c)
//   decay4            w -= w * weight_decay * lr_t       decoupled weight decay, before the update
//   prox4             w = sign(w) * max(|w| - l1 * step, 0)   the proximal L1 step, after it (step: the
//                                                        optimizer's own per-element step size)
// step_sizes[state.batch] is this step's (step size, learning rate): the optimizer's step size (Adam's
// alpha, SGD's and RMSprop's learning rate) and the learning rate of the schedule at this step, computed
// per step on the host exactly as Keras does (float32 powf; the GPU's pow is an exp2/log2
// approximation), one table per epoch. U.lr is the initial learning rate (not read).


struct Segment {
    start: u32, len: u32, l1: f32, l2: f32,
    proximal: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

struct UpdateParams {
    n: u32, n_segments: u32, lr: f32, weight_decay: f32,
    clip_mode: u32, clip_value: f32, _pad0: u32, _pad1: u32,   // clip_mode: 0 none, 1 norm, 2 global, 3 value
}

struct State {
    step: u32,
    batch: u32,
}

@group(0) @binding(0) var<uniform> U: UpdateParams;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
// A uniform (at most 2048 tensors): on llvmpipe uniform loads cost a third of storage loads.
@group(0) @binding(2) var<uniform> segments: array<Segment, 2048>;
@group(0) @binding(3) var<storage, read> state: State;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> reg: array<f32>;
@group(0) @binding(6) var<storage, read> step_sizes: array<vec2<f32>>;   // [steps of this epoch]
@group(0) @binding(7) var<storage, read_write> sumsq: array<f32>;  // [segments]
// An update works on 4 elements at a time (4 loads for the price of one per-lane loop on llvmpipe): the
// same buffers as params and grads, as vec4 arrays (sized to whole vec4s: 64-element padded)
@group(0) @binding(8) var<storage, read_write> params4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> grads4: array<vec4<f32>>;

var<workgroup> partial: array<f32, 256>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    return partial[0];
}

// The gradient Keras' optimizer sees for element i of segment seg (weights w): data + penalty.
fn total_gradient(seg: Segment, g: f32, w: f32) -> f32 {
    return total_gradient4(seg, vec4<f32>(g), vec4<f32>(w)).x;
}

// total_gradient for 4 elements of one tensor (the proximal step replaces the l1 gradient).
fn total_gradient4(seg: Segment, g: vec4<f32>, w: vec4<f32>) -> vec4<f32> {
    let l1 = select(seg.l1, 0.0, seg.proximal != 0u);
    return g + l1 * sign(w) + 2.0 * seg.l2 * w;
}

// The segment holding the 64-element block that starts at element i0 (U.n_segments: alignment padding
// between tensors, which an update leaves alone).
fn segment_of(i0: u32) -> u32 {
    var s = U.n_segments;
    for (var k = 0u; k < U.n_segments; k++) {
        let start = segments[k].start;
        if (i0 >= start && i0 < start + segments[k].len) {
            s = k;
        }
    }
    return s;
}

// Keras' gradient clipping of 4 elements of segment s.
fn clip4(s: u32, g0: vec4<f32>) -> vec4<f32> {
    var g = g0;
    if (U.clip_mode == 1u) {
        let l2sum = sumsq[s];
        var l2norm = l2sum;
        if (l2sum > 0.0) {
            l2norm = sqrt(l2sum);
        }
        g = (g * U.clip_value) / max(l2norm, U.clip_value);
    } else if (U.clip_mode == 2u) {
        var total = 0.0;
        for (var k = 0u; k < U.n_segments; k++) {
            total += sumsq[k];
        }
        let use_norm = sqrt(total);
        g = g * (U.clip_value * min(1.0 / use_norm, 1.0 / U.clip_value));
    } else if (U.clip_mode == 3u) {
        g = min(max(g, vec4<f32>(-U.clip_value)), vec4<f32>(U.clip_value));
    }
    return g;
}

// Decoupled weight decay of 4 elements.
fn decay4(w0: vec4<f32>) -> vec4<f32> {
    var w = w0;
    if (U.weight_decay != 0.0) {
        w -= w * U.weight_decay * step_sizes[state.batch].y;
    }
    return w;
}

// The proximal L1 soft-threshold of 4 elements of `seg` after the update, `step` being the optimizer's
// per-element step size (a no-op where the segment is not proximal).
fn prox4(seg: Segment, w0: vec4<f32>, step: vec4<f32>) -> vec4<f32> {
    var w = w0;
    if (seg.proximal != 0u) {
        let threshold = seg.l1 * step;
        w = sign(w) * max(abs(w) - threshold, vec4<f32>(0.0));
    }
    return w;
}

// What an optimizer's update invocation works on (its entry point: grid ceil(n / 256) folded, UPDATE_WG
// invocations per workgroup, 4 elements, a vec4, each): since tensors start 64-element aligned, an
// invocation's 4 elements lie inside one tensor (or the padding after it), whose segment it looks up.
// Workgroups of 64 rather than 16: a quarter of the workgroups, each with its fixed cost on llvmpipe
// (Adam 323 -> 290 us per step, interleaved). `live` marks the elements before the tensor's end (those
// after keep their values); `g` is the penalised, clipped gradient and `w` the weights after weight
// decay, Keras' order before the optimizer's own step.
const UPDATE_WG: u32 = 64u;   // invocations per workgroup of every optimizer's update (4 elements each)

struct UpdateLanes {
    ok: bool,          // false: alignment padding between tensors, nothing to update
    s: u32,
    seg: Segment,
    q: u32,            // index into the vec4 arrays
    live: vec4<bool>,
    w0: vec4<f32>,     // the weights before the update
    g: vec4<f32>,
    w: vec4<f32>,
}

fn update_lanes(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> UpdateLanes {
    var l: UpdateLanes;
    let e = ((wg.y * nwg.x + wg.x) * UPDATE_WG + lid) * 4u;   // first element of this invocation
    l.s = segment_of(e);
    l.ok = l.s != U.n_segments && e < U.n;
    // No early return for the lanes with nothing to update: llvmpipe would run the rest of the update
    // under an execution mask, loading even its uniform values lane by lane. They compute on the first
    // segment's first elements instead, and their entry point stores nothing (`ok`).
    l.seg = segments[select(0u, l.s, l.ok)];
    l.live = ((vec4<u32>(e) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(l.seg.start + l.seg.len)) & vec4<bool>(l.ok);
    l.q = select(l.seg.start, e, l.ok) / 4u;
    l.w0 = params4[l.q];
    l.g = clip4(l.s, total_gradient4(l.seg, grads4[l.q], l.w0));
    l.w = decay4(l.w0);
    return l;
}

@compute @workgroup_size(256)
fn regularization_loss(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var s = 0u; s < U.n_segments; s++) {
        let seg = segments[s];
        for (var i = lid; i < seg.len; i += 256u) {
            let w = params[seg.start + i];
            acc += seg.l1 * abs(w) + seg.l2 * w * w;
        }
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        reg[0] = total;
    }
}

// grid (n_segments): one workgroup per tensor
@compute @workgroup_size(256)
fn gradient_sumsq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (wg.x >= U.n_segments) {
        return;
    }
    let seg = segments[wg.x];
    var acc = 0.0;
    for (var i = lid; i < seg.len; i += 256u) {
        let g = total_gradient(seg, grads[seg.start + i], params[seg.start + i]);
        acc += g * g;
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        sumsq[wg.x] = total;
    }
}
