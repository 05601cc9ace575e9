// Fused softmax + categorical cross-entropy from logits, and the metric reductions.
//
// softmax_xent, one invocation per example n < batch, targets t = onehot(y[n]) * (1 - s) + s / K (s: the
// label smoothing; 0 for the sparse loss, where t is the label's one-hot):
//   ce[n]         = logsumexp(logits[n]) - sum_k t[k] * logits[n, k]   (no probability clipping, as Keras from logits)
//   dlogits[n, k] = (softmax(logits[n])[k] - t[k]) / batch
// both times the class weight w[y[n]] in a training step with class_weight (Keras' sample weights:
// the loss is sum(w * ce) / batch, 'sum_over_batch_size')
//   correct[n]    = 1.0 if the first argmax of logits[n] is y[n] (Keras sparse_categorical_accuracy)
// accumulate, one workgroup of 64 (lanes sum every 64th example, then a tree in workgroup memory):
//   metrics.loss_sum += (mean(ce) + reg_loss) * batch   (Keras' loss tracker: a Mean weighted by batch size)
//   metrics.correct  += sum(correct);  metrics.count += batch
//   then advances the GPU-side step state (step for Adam's t, batch for the gather), so a training
//   step needs no host upload and no readback.

struct LossParams {
    batch: u32, classes: u32, advance: u32, label_smoothing: f32,   // advance: bit 0 step, bit 1 batch
}

struct State {
    step: u32,
    batch: u32,
}

struct Metrics {
    loss_sum: f32,
    correct: f32,
    count: f32,
    nonfinite: u32,   // set when a non-finite loss was seen
}

@group(0) @binding(0) var<uniform> P: LossParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;         // [B, K]
@group(0) @binding(2) var<storage, read> labels: array<u32>;         // [B]
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;  // [B, K]
@group(0) @binding(4) var<storage, read_write> per_example: array<f32>; // [B, 2]: ce, correct
@group(0) @binding(5) var<storage, read> reg_loss: array<f32>;       // [1]
@group(0) @binding(6) var<storage, read_write> metrics: Metrics;
@group(0) @binding(7) var<storage, read_write> state: State;
// Keras' class_weight, per class (ones without): a training step weighs each example's loss and
// gradient by its class's weight (advance bit 2); evaluation does not
@group(0) @binding(8) var<storage, read> class_weights: array<f32>;   // [K]

@compute @workgroup_size(64)
fn softmax_xent(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if (n >= P.batch) {
        return;
    }
    let base = n * P.classes;
    var mx = logits[base];
    var arg = 0u;
    for (var k = 1u; k < P.classes; k++) {
        let v = logits[base + k];
        if (v > mx) {
            mx = v;
            arg = k;
        }
    }
    var sum = 0.0;
    for (var k = 0u; k < P.classes; k++) {
        sum += exp(logits[base + k] - mx);
    }
    let label = labels[n];
    let lse = mx + log(sum);
    let s = P.label_smoothing;
    let on = 1.0 - s + s / f32(P.classes);
    let off = s / f32(P.classes);
    var target_dot = logits[base + label];
    if (s != 0.0) {
        target_dot = 0.0;
        for (var k = 0u; k < P.classes; k++) {
            target_dot += select(off, on, k == label) * logits[base + k];
        }
    }
    var weight = 1.0;
    if ((P.advance & 4u) != 0u) {
        weight = class_weights[label];
    }
    per_example[2u * n] = (lse - target_dot) * weight;
    per_example[2u * n + 1u] = select(0.0, 1.0, arg == label);
    let inv_b = 1.0 / f32(P.batch);
    for (var k = 0u; k < P.classes; k++) {
        let p = exp(logits[base + k] - mx) / sum;
        var t = select(0.0, 1.0, k == label);
        if (s != 0.0) {
            t = select(off, on, k == label);
        }
        dlogits[base + k] = (p - t) * weight * inv_b;
    }
}

var<workgroup> lanes: array<vec2<f32>, 64>;

@compute @workgroup_size(64)
fn accumulate(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0);
    for (var n = lid; n < P.batch; n += 64u) {
        acc += vec2<f32>(per_example[2u * n], per_example[2u * n + 1u]);
    }
    lanes[lid] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            lanes[lid] += lanes[lid + s];
        }
        workgroupBarrier();
    }
    if (lid != 0u) {
        return;
    }
    let ce = lanes[0].x;
    let correct = lanes[0].y;
    let b = f32(P.batch);
    let loss = ce / b + reg_loss[0];
    if (!(abs(loss) <= 3.4e38)) {
        metrics.nonfinite = 1u;
    }
    metrics.loss_sum += loss * b;
    metrics.correct += correct;
    metrics.count += b;
    if ((P.advance & 1u) != 0u) {
        state.step += 1u;
    }
    if ((P.advance & 2u) != 0u) {
        state.batch += 1u;
    }
}
