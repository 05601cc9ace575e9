//! Dense twin: y = act(x @ W + b), x [B, IN], W [IN, OUT].

use super::activation_backward;

/// y = act(x @ W + b); x [B, IN], W [IN, OUT].
pub fn dense_forward(
    batch: usize,
    in_n: usize,
    out_n: usize,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    relu: bool,
) -> Vec<f64> {
    let mut y = vec![0.0; batch * out_n];
    for n in 0..batch {
        for o in 0..out_n {
            let mut acc = b[o];
            for i in 0..in_n {
                acc += x[n * in_n + i] * w[i * out_n + o];
            }
            y[n * out_n + o] = if relu { acc.max(0.0) } else { acc };
        }
    }
    y
}

/// Returns (dW [IN, OUT], db [OUT], dx [B, IN]).
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    batch: usize,
    in_n: usize,
    out_n: usize,
    x: &[f64],
    w: &[f64],
    y: &[f64],
    dy: &[f64],
    relu: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dpre = activation_backward(y, dy, relu);
    let mut dw = vec![0.0; in_n * out_n];
    let mut db = vec![0.0; out_n];
    let mut dx = vec![0.0; batch * in_n];
    for n in 0..batch {
        for o in 0..out_n {
            let g = dpre[n * out_n + o];
            db[o] += g;
            for i in 0..in_n {
                dw[i * out_n + o] += x[n * in_n + i] * g;
                dx[n * in_n + i] += w[i * out_n + o] * g;
            }
        }
    }
    (dw, db, dx)
}
