//! BatchNormalization twin over the last axis: `rows` positions (batch x height x width) of `c`
//! channels, as Keras computes it with TensorFlow: the batch's mean and biased variance (two passes,
//! `tf.nn.moments`), y = x * inv + (beta - mean * inv) with inv = gamma / sqrt(var + eps)
//! (`tf.nn.batch_normalization`), and the moving statistics' update
//! moving = moving * momentum + batch * (1 - momentum).

/// Per channel (mean, biased variance) over `rows` positions.
pub fn bn_moments(rows: usize, c: usize, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for r in 0..rows {
        for k in 0..c {
            mean[k] += x[r * c + k];
        }
    }
    for m in &mut mean {
        *m /= rows as f64;
    }
    for r in 0..rows {
        for k in 0..c {
            let d = x[r * c + k] - mean[k];
            var[k] += d * d;
        }
    }
    for v in &mut var {
        *v /= rows as f64;
    }
    (mean, var)
}

/// y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel.
pub fn bn_apply(
    c: usize,
    x: &[f64],
    (mean, var): (&[f64], &[f64]),
    (gamma, beta): (&[f64], &[f64]),
    eps: f64,
) -> Vec<f64> {
    let inv: Vec<f64> = (0..c).map(|k| gamma[k] / (var[k] + eps).sqrt()).collect();
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = i % c;
            v * inv[k] + (beta[k] - mean[k] * inv[k])
        })
        .collect()
}

/// The training backward (the batch statistics depend on x): (dgamma, dbeta, dx).
pub fn bn_backward(
    rows: usize,
    c: usize,
    x: &[f64],
    gamma: &[f64],
    eps: f64,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mean, var) = bn_moments(rows, c, x);
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for r in 0..rows {
        for k in 0..c {
            let i = r * c + k;
            let xhat = (x[i] - mean[k]) * inv_std[k];
            dgamma[k] += dy[i] * xhat;
            dbeta[k] += dy[i];
        }
    }
    let n = rows as f64;
    let mut dx = vec![0.0; x.len()];
    for r in 0..rows {
        for k in 0..c {
            let i = r * c + k;
            let xhat = (x[i] - mean[k]) * inv_std[k];
            dx[i] = gamma[k] * inv_std[k] * (dy[i] - dbeta[k] / n - xhat * dgamma[k] / n);
        }
    }
    (dgamma, dbeta, dx)
}

/// The moving statistic's update.
pub fn bn_moving(moving: &[f64], batch: &[f64], momentum: f64) -> Vec<f64> {
    moving
        .iter()
        .zip(batch)
        .map(|(m, b)| m * momentum + b * (1.0 - momentum))
        .collect()
}
