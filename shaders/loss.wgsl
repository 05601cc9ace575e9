// The loss kernels. softmax_xent: one invocation per example n < batch, the math of softmax_xent.wgsl
// (read before this file), from the logits the model's last op wrote; a dense last op of at most 16
// outputs does it itself at the end of its forward (dense_loss.wgsl), when the step is fused.
//
// accumulate, one workgroup of 64 (lanes sum every 64th example, then a tree in workgroup memory):
//   metrics.loss_sum += (mean(ce) + reg_loss) * batch   (Keras' loss tracker: a Mean weighted by batch size)
//   metrics.correct  += sum(correct);  metrics.count += batch
//   then advances the GPU-side step state (step for Adam's t, batch for the gather), so a training
//   step needs no host upload and no readback.

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

@group(0) @binding(0) var<uniform> LP: LossParams;
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

fn loss_logit(n: u32, k: u32) -> f32 {
    return logits[n * LP.classes + k];
}

@compute @workgroup_size(64)
fn softmax_xent(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if (n >= LP.batch) {
        return;
    }
    softmax_xent_row(n);
}

var<workgroup> lanes: array<vec2<f32>, 64>;

@compute @workgroup_size(64)
fn accumulate(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0);
    for (var n = lid; n < LP.batch; n += 64u) {
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
    let b = f32(LP.batch);
    let loss = ce / b + reg_loss[0];
    if (!(abs(loss) <= 3.4e38)) {
        metrics.nonfinite = 1u;
    }
    metrics.loss_sum += loss * b;
    metrics.correct += correct;
    metrics.count += b;
    if ((LP.advance & 1u) != 0u) {
        state.step += 1u;
    }
    if ((LP.advance & 2u) != 0u) {
        state.batch += 1u;
    }
}
