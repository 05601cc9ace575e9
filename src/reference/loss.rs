//! Softmax + sparse categorical cross-entropy from logits, and the batch gather.

/// Softmax + sparse categorical cross-entropy from logits: (ce per example, dlogits = (softmax - onehot)/B,
/// correct per example: first argmax == label).
pub fn softmax_xent(
    batch: usize,
    classes: usize,
    logits: &[f64],
    labels: &[u32],
) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
    softmax_xent_smoothed(batch, classes, logits, labels, 0.0)
}

/// Softmax + categorical cross-entropy from logits against the smoothed one-hot targets
/// `t = onehot · (1 − s) + s / classes` (Keras' `label_smoothing`; s = 0: the sparse loss):
/// (ce = logsumexp − Σ t·z per example, dlogits = (softmax − t)/B, correct per example).
pub fn softmax_xent_smoothed(
    batch: usize,
    classes: usize,
    logits: &[f64],
    labels: &[u32],
    smoothing: f32,
) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
    let s = smoothing as f64;
    let target = |k: usize, y: usize| {
        let onehot = if k == y { 1.0 } else { 0.0 };
        onehot * (1.0 - s) + s / classes as f64
    };
    let mut ce = vec![0.0; batch];
    let mut dl = vec![0.0; batch * classes];
    let mut correct = vec![false; batch];
    for n in 0..batch {
        let row = &logits[n * classes..(n + 1) * classes];
        let (mut arg, mut mx) = (0, row[0]);
        for (k, &v) in row.iter().enumerate().skip(1) {
            if v > mx {
                mx = v;
                arg = k;
            }
        }
        let sum: f64 = row.iter().map(|&v| (v - mx).exp()).sum();
        let y = labels[n] as usize;
        let dot: f64 = (0..classes).map(|k| target(k, y) * row[k]).sum();
        ce[n] = mx + sum.ln() - dot;
        correct[n] = arg == y;
        for k in 0..classes {
            let p = (row[k] - mx).exp() / sum;
            dl[n * classes + k] = (p - target(k, y)) / batch as f64;
        }
    }
    (ce, dl, correct)
}

/// `softmax_xent_smoothed` with Keras' class_weight: each example's loss and gradient times the weight
/// of its class.
pub fn softmax_xent_weighted(
    batch: usize,
    classes: usize,
    logits: &[f64],
    labels: &[u32],
    smoothing: f32,
    class_weights: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
    let (mut ce, mut dl, correct) =
        softmax_xent_smoothed(batch, classes, logits, labels, smoothing);
    for n in 0..batch {
        let w = class_weights[labels[n] as usize] as f64;
        ce[n] *= w;
        dl[n * classes..(n + 1) * classes]
            .iter_mut()
            .for_each(|g| *g *= w);
    }
    (ce, dl, correct)
}

/// x[r, p] = images[order[batch_index * full_batch + r], p] / 255, y[r] likewise.
pub fn gather_batch(
    images: &[u8],
    labels: &[u32],
    order: &[u32],
    batch_index: usize,
    full_batch: usize,
    rows: usize,
    per_image: usize,
) -> (Vec<f32>, Vec<u32>) {
    let mut x = vec![0f32; rows * per_image];
    let mut y = vec![0u32; rows];
    for r in 0..rows {
        let e = order[batch_index * full_batch + r] as usize;
        for p in 0..per_image {
            x[r * per_image + p] = images[e * per_image + p] as f32 / 255.0;
        }
        y[r] = labels[e];
    }
    (x, y)
}
