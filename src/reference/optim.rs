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

/// One optimizer step on a tensor (`Settings::method`), `t` = step number starting at 1, `g` the
/// (penalised, clipped) gradient, `slots` the optimizer's state of this tensor in `Method::slot_names`
/// order; decoupled weight decay (with the step's learning rate) first, and the proximal L1
/// soft-threshold after, when `prox_l1` > 0.
pub fn optimizer_update(
    w: &mut [f32],
    g: &[f32],
    slots: &mut [&mut [f32]],
    t: u64,
    h: &Settings,
    prox_l1: f32,
) {
    let lr = h.lr_at(t);
    if h.weight_decay != 0.0 {
        w.iter_mut().for_each(|wi| *wi -= *wi * h.weight_decay * lr);
    }
    // the per-element step size of the proximal step, where the method defines one
    let mut step = vec![0.0f32; w.len()];
    match h.method {
        Method::Adam { eps, beta1, beta2 } | Method::AdamW { eps, beta1, beta2 } => {
            let one_minus_b1 = (1.0 - beta1 as f64) as f32;
            let one_minus_b2 = (1.0 - beta2 as f64) as f32;
            let alpha = h.step_size(t);
            let [m, v] = slots else {
                panic!("Adam has two slots")
            };
            for i in 0..w.len() {
                let gi = g[i];
                m[i] += (gi - m[i]) * one_minus_b1;
                v[i] += (gi * gi - v[i]) * one_minus_b2;
                w[i] -= (m[i] * alpha) / (v[i].sqrt() + eps);
                step[i] = alpha / (v[i].sqrt() + eps);
            }
        }
        Method::Sgd { momentum, nesterov } => {
            for i in 0..w.len() {
                if momentum != 0.0 {
                    let m = &mut slots[0][i];
                    *m = *m * momentum - g[i] * lr;
                    if nesterov {
                        w[i] += *m * momentum - g[i] * lr;
                    } else {
                        w[i] += *m;
                    }
                } else {
                    w[i] -= g[i] * lr;
                    step[i] = lr;
                }
            }
        }
        Method::RmsProp {
            rho,
            momentum,
            eps,
            centered,
        } => {
            let one_minus_rho = (1.0 - rho as f64) as f32;
            for i in 0..w.len() {
                let gi = g[i];
                let v = &mut slots[0][i];
                *v = rho * *v + one_minus_rho * (gi * gi);
                let mut d = *v + eps;
                if centered {
                    let k = slots.len() - 1;
                    let vv = slots[0][i];
                    let a = &mut slots[k][i];
                    *a = rho * *a + one_minus_rho * gi;
                    d = vv - *a * *a + eps;
                }
                let inc = (lr * gi) / d.sqrt();
                if momentum > 0.0 {
                    let m = &mut slots[1][i];
                    *m = momentum * *m + inc;
                    w[i] -= *m;
                } else {
                    w[i] -= inc;
                    step[i] = lr / d.sqrt();
                }
            }
        }
    }
    if prox_l1 > 0.0 {
        for i in 0..w.len() {
            let threshold = prox_l1 * step[i];
            w[i] = w[i].signum() * (w[i].abs() - threshold).max(0.0);
        }
    }
}

/// The optimizer's zeroed state for tensors of `sizes`: [slot][tensor].
pub fn zero_slots(h: &Settings, sizes: &[usize]) -> Vec<Vec<Vec<f32>>> {
    h.method
        .slot_names()
        .iter()
        .map(|_| sizes.iter().map(|&n| vec![0.0; n]).collect())
        .collect()
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
