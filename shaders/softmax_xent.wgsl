// Fused softmax + categorical cross-entropy of one example, from its logits: a part shared by
// loss.wgsl (softmax_xent, one invocation per example) and dense_loss.wgsl (the same math at the end of
// a dense forward that ends the model). The shader this part goes into declares the uniform LP, the
// bindings labels, class_weights, per_example and dlogits, and loss_logit(n, k): the logit k of example n.
//
// Targets t = onehot(y[n]) * (1 - s) + s / K (s: the label smoothing; 0 for the sparse loss, where t is
// the label's one-hot):
//   ce[n]         = logsumexp(logits[n]) - sum_k t[k] * logits[n, k]   (no probability clipping, as Keras from logits)
//   dlogits[n, k] = (softmax(logits[n])[k] - t[k]) / batch
// both times the class weight w[y[n]] in a training step with class_weight (Keras' sample weights:
// the loss is sum(w * ce) / batch, 'sum_over_batch_size')
//   correct[n]    = 1.0 if the first argmax of logits[n] is y[n] (Keras sparse_categorical_accuracy)

struct LossParams {
    batch: u32, classes: u32, advance: u32, label_smoothing: f32,   // advance: bit 0 step, bit 1 batch
}

fn softmax_xent_row(n: u32) {
    let base = n * LP.classes;
    var mx = loss_logit(n, 0u);
    var arg = 0u;
    for (var k = 1u; k < LP.classes; k++) {
        let v = loss_logit(n, k);
        if (v > mx) {
            mx = v;
            arg = k;
        }
    }
    var sum = 0.0;
    for (var k = 0u; k < LP.classes; k++) {
        sum += exp(loss_logit(n, k) - mx);
    }
    let label = labels[n];
    let lse = mx + log(sum);
    let s = LP.label_smoothing;
    let on = 1.0 - s + s / f32(LP.classes);
    let off = s / f32(LP.classes);
    var target_dot = loss_logit(n, label);
    if (s != 0.0) {
        target_dot = 0.0;
        for (var k = 0u; k < LP.classes; k++) {
            target_dot += select(off, on, k == label) * loss_logit(n, k);
        }
    }
    var weight = 1.0;
    if ((LP.advance & 4u) != 0u) {
        weight = class_weights[label];
    }
    per_example[2u * n] = (lse - target_dot) * weight;
    per_example[2u * n + 1u] = select(0.0, 1.0, arg == label);
    let inv_b = 1.0 / f32(LP.batch);
    for (var k = 0u; k < LP.classes; k++) {
        let p = exp(loss_logit(n, k) - mx) / sum;
        var t = select(0.0, 1.0, k == label);
        if (s != 0.0) {
            t = select(off, on, k == label);
        }
        dlogits[base + k] = (p - t) * weight * inv_b;
    }
}
