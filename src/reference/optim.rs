//! Optimizer and restriction twins: Adam with the penalty gradient folded in (f32, Keras' float32
//! arithmetic and order), regularization loss, and the constraints over Keras axes.

use crate::optim::settings::{GradClip, Method, Settings};
use crate::restrict::{Constraint, Regularizer};

/// The gradient Keras' optimizer sees: the data gradient plus the penalty gradient
/// `l1 * sign(w) + 2 * l2 * w` (no L1 term in proximal mode, where a soft-threshold replaces it).
pub fn total_gradient(w: &[f32], g: &[f32], reg: &Regularizer) -> Vec<f32> {
    let l1 = if reg.proximal { 0.0 } else { reg.l1 };
    w.iter()
        .zip(g)
        .map(|(&wi, &gi)| {
            let sign = if wi > 0.0 {
                1.0
            } else if wi < 0.0 {
                -1.0
            } else {
                0.0
            };
            gi + l1 * sign + 2.0 * reg.l2 * wi
        })
        .collect()
}

/// Keras' gradient clipping over all tensors' gradients (`BaseOptimizer._clip_gradients`).
pub fn clip_gradients(grads: &mut [Vec<f32>], clip: GradClip) {
    let sumsq = |g: &[f32]| g.iter().map(|&x| x as f64 * x as f64).sum::<f64>();
    match clip {
        GradClip::None => {}
        GradClip::Norm(c) => {
            for g in grads.iter_mut() {
                let l2norm = sumsq(g).sqrt() as f32;
                g.iter_mut().for_each(|x| *x = (*x * c) / l2norm.max(c));
            }
        }
        GradClip::GlobalNorm(c) => {
            let use_norm = grads.iter().map(|g| sumsq(g)).sum::<f64>().sqrt() as f32;
            let scale = c * (1.0 / use_norm).min(1.0 / c);
            grads
                .iter_mut()
                .for_each(|g| g.iter_mut().for_each(|x| *x *= scale));
        }
        GradClip::Value(c) => grads
            .iter_mut()
            .for_each(|g| g.iter_mut().for_each(|x| *x = x.max(-c).min(c))),
    }
}

/// One Adam step on a tensor, `t` = step number starting at 1, `g` the (penalised, clipped) gradient;
/// decoupled weight decay first, and the proximal L1 soft-threshold after, when `prox_l1` > 0.
#[allow(clippy::too_many_arguments)]
pub fn adam_update(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    t: u64,
    h: &Settings,
    prox_l1: f32,
) {
    let Method::Adam { beta1, beta2, eps } = h.method;
    let one_minus_b1 = (1.0 - beta1 as f64) as f32;
    let one_minus_b2 = (1.0 - beta2 as f64) as f32;
    let alpha = h.step_size(t);
    for i in 0..w.len() {
        let mut wi = w[i];
        let gi = g[i];
        if h.weight_decay != 0.0 {
            wi -= wi * h.weight_decay * h.lr;
        }
        m[i] += (gi - m[i]) * one_minus_b1;
        v[i] += (gi * gi - v[i]) * one_minus_b2;
        wi -= (m[i] * alpha) / (v[i].sqrt() + eps);
        if prox_l1 > 0.0 {
            let threshold = prox_l1 * (alpha / (v[i].sqrt() + eps));
            wi = wi.signum() * (wi.abs() - threshold).max(0.0);
        }
        w[i] = wi;
    }
}

/// l1 * sum|w| + l2 * sum w^2
pub fn regularization_loss(w: &[f32], l1: f32, l2: f32) -> f64 {
    w.iter()
        .map(|&x| l1 as f64 * (x as f64).abs() + l2 as f64 * (x as f64) * (x as f64))
        .sum()
}

/// Apply one constraint to a Keras-layout tensor of `shape`, in f32 as Keras does.
pub fn apply_constraint(w: &mut [f32], shape: &[usize], c: &Constraint) {
    const EPS: f32 = 1e-7;
    let norm_apply = |w: &mut [f32], axes: &[usize], f: &dyn Fn(f32, f32) -> f32| {
        for group in norm_groups(shape, axes) {
            let n = group.iter().map(|&i| w[i] * w[i]).sum::<f32>().sqrt();
            for &i in &group {
                w[i] = f(w[i], n);
            }
        }
    };
    match c {
        Constraint::ClipByValue { lo, hi } => w.iter_mut().for_each(|x| *x = x.max(*lo).min(*hi)),
        Constraint::NonNeg => w
            .iter_mut()
            .for_each(|x| *x = if *x >= 0.0 { *x } else { 0.0 }),
        Constraint::UnitNorm { axes } => norm_apply(w, axes, &|x, n| x / (EPS + n)),
        Constraint::MaxNorm { max_value, axes } => {
            norm_apply(w, axes, &|x, n| x * (n.clamp(0.0, *max_value) / (EPS + n)))
        }
        Constraint::MinMaxNorm {
            min_value,
            max_value,
            rate,
            axes,
        } => norm_apply(w, axes, &|x, n| {
            x * ((rate * n.clamp(*min_value, *max_value) + (1.0 - rate) * n) / (EPS + n))
        }),
    }
}

/// Element indices of each group of a norm over `axes` (row-major tensor of `shape`).
pub fn norm_groups(shape: &[usize], axes: &[usize]) -> Vec<Vec<usize>> {
    let total: usize = shape.iter().product();
    let mut strides = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let mut groups: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
    for i in 0..total {
        let key: Vec<usize> = (0..shape.len())
            .filter(|a| !axes.contains(a))
            .map(|a| (i / strides[a]) % shape[a])
            .collect();
        groups.entry(key).or_default().push(i);
    }
    groups.into_values().collect()
}
