//! Whole-model twin: forward, backward and one training step of a `ModelPlan`, built from the layer
//! twins, in the same order as the GPU step.

use super::loss::softmax_xent_smoothed;
use super::optim::*;
use crate::layers::TwinForward;
use crate::losses::LossSpec;
use crate::model::ModelPlan;
use crate::optim::settings::Settings;
use crate::restrict::{Regularizer, Restrictions};

pub struct Forward {
    /// each layer's output (after its activation; logits for the softmax layer) and a pool's choices
    pub layers: Vec<TwinForward>,
}

/// The parameters of layer `i`, in its weight order.
fn layer_weights<'w>(plan: &ModelPlan, weights: &'w [Vec<f64>], i: usize) -> Vec<&'w [f64]> {
    plan.layers[i]
        .params
        .iter()
        .map(|&p| weights[p].as_slice())
        .collect()
}

/// The forward pass in inference.
pub fn model_forward(plan: &ModelPlan, weights: &[Vec<f64>], x: &[f64], batch: usize) -> Forward {
    model_forward_at(plan, weights, x, batch, None)
}

/// The forward pass; `train`: (optimizer step, 0-based; the run's seed) of a training step (dropout
/// masks), None: inference.
pub fn model_forward_at(
    plan: &ModelPlan,
    weights: &[Vec<f64>],
    x: &[f64],
    batch: usize,
    train: Option<(u64, u64)>,
) -> Forward {
    let mut layers: Vec<TwinForward> = Vec::new();
    for (i, l) in plan.layers.iter().enumerate() {
        let input = if i == 0 { x } else { &layers[i - 1].y };
        let kind = l.spec.kind();
        let w = layer_weights(plan, weights, i);
        let out = match train {
            Some(t) => kind.twin_forward_train(l, batch, input, &w, t),
            None => kind.twin_forward(l, batch, input, &w),
        };
        layers.push(out);
    }
    Forward { layers }
}

/// Gradients of every parameter tensor given dL/dlogits.
pub fn model_backward(
    plan: &ModelPlan,
    weights: &[Vec<f64>],
    x: &[f64],
    fwd: &Forward,
    dlogits: Vec<f64>,
    batch: usize,
) -> Vec<Vec<f64>> {
    let mut grads: Vec<Vec<f64>> = plan.params.iter().map(|p| vec![0.0; p.len]).collect();
    let mut dy = dlogits;
    for i in (0..plan.layers.len()).rev() {
        let l = &plan.layers[i];
        let input = if i == 0 { x } else { &fwd.layers[i - 1].y };
        let (dw, dx) = l.spec.kind().twin_backward(
            l,
            batch,
            input,
            &layer_weights(plan, weights, i),
            &fwd.layers[i],
            &dy,
        );
        for (&p, g) in l.params.iter().zip(dw) {
            grads[p] = g;
        }
        dy = dx;
    }
    grads
}

/// (mean cross-entropy, gradients, logits, number correct) for one batch, in inference (no dropout),
/// with the sparse loss.
pub fn model_loss_grads(
    plan: &ModelPlan,
    weights: &[Vec<f64>],
    x: &[f64],
    labels: &[u32],
) -> (f64, Vec<Vec<f64>>, Vec<f64>, usize) {
    model_loss_grads_at(plan, weights, x, labels, None, &LossSpec::default())
}

/// `model_loss_grads` in the training step `train` (see `model_forward_at`), with `loss`.
pub fn model_loss_grads_at(
    plan: &ModelPlan,
    weights: &[Vec<f64>],
    x: &[f64],
    labels: &[u32],
    train: Option<(u64, u64)>,
    loss: &LossSpec,
) -> (f64, Vec<Vec<f64>>, Vec<f64>, usize) {
    let (loss, grads, logits, correct, _) =
        loss_grads_forward(plan, weights, x, labels, train, loss);
    (loss, grads, logits, correct)
}

/// The new values of the non-trainable tensors a training forward pass set (BatchNormalization's
/// moving statistics): (parameter index, values).
pub fn state_updates(plan: &ModelPlan, fwd: &Forward) -> Vec<(usize, Vec<f64>)> {
    let mut out = Vec::new();
    for (l, f) in plan.layers.iter().zip(&fwd.layers) {
        if let Some(state) = &f.state {
            let fixed = l.params.iter().filter(|&&p| !plan.params[p].trainable);
            out.extend(fixed.copied().zip(state.iter().cloned()));
        }
    }
    out
}

/// `model_loss_grads_at` with its forward pass.
fn loss_grads_forward(
    plan: &ModelPlan,
    weights: &[Vec<f64>],
    x: &[f64],
    labels: &[u32],
    train: Option<(u64, u64)>,
    loss: &LossSpec,
) -> (f64, Vec<Vec<f64>>, Vec<f64>, usize, Forward) {
    let batch = labels.len();
    let fwd = model_forward_at(plan, weights, x, batch, train);
    let logits = fwd.layers.last().expect("a model has layers").y.clone();
    let (ce, dl, correct) =
        softmax_xent_smoothed(batch, plan.classes, &logits, labels, loss.label_smoothing);
    let grads = model_backward(plan, weights, x, &fwd, dl, batch);
    (
        ce.iter().sum::<f64>() / batch as f64,
        grads,
        logits,
        correct.iter().filter(|&&c| c).count(),
        fwd,
    )
}

/// One full training step, the GPU order: loss and gradients, regularization loss on the pre-update
/// weights, penalty gradients, gradient clipping, weight decay + the optimizer (+ proximal L1), then the
/// per-step constraints. The moving statistics a training forward updates (BatchNormalization) take
/// their new values; the optimizer skips them. `t`: the step number from 1; `seed`: the run's (dropout
/// masks). Returns the loss Keras reports.
#[allow(clippy::too_many_arguments)]
pub fn reference_step(
    plan: &ModelPlan,
    r: &Restrictions,
    (h, loss): (&Settings, &LossSpec),
    weights: &mut [Vec<f32>],
    slots: &mut [Vec<Vec<f32>>],
    (t, seed): (u64, u64),
    x: &[f32],
    labels: &[u32],
) -> f64 {
    let w64: Vec<Vec<f64>> = weights
        .iter()
        .map(|w| w.iter().map(|&v| v as f64).collect())
        .collect();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (loss, grads, _, _, fwd) =
        loss_grads_forward(plan, &w64, &x64, labels, Some((t - 1, seed)), loss);
    for (p, v) in state_updates(plan, &fwd) {
        weights[p] = v.iter().map(|&v| v as f32).collect();
    }
    let regs: Vec<Regularizer> = plan
        .params
        .iter()
        .map(|p| {
            r.get(&p.name)
                .and_then(|t| t.regularizer)
                .unwrap_or_default()
        })
        .collect();
    let mut reg = 0.0;
    let mut total: Vec<Vec<f32>> = Vec::new();
    for (i, g) in grads.iter().enumerate() {
        reg += regularization_loss(&weights[i], regs[i].l1, regs[i].l2);
        let g32: Vec<f32> = g.iter().map(|&g| g as f32).collect();
        total.push(total_gradient(&weights[i], &g32, &regs[i]));
    }
    clip_gradients(&mut total, h.clip);
    for i in 0..plan.params.len() {
        if !plan.params[i].trainable {
            continue;
        }
        let prox = if regs[i].proximal { regs[i].l1 } else { 0.0 };
        let mut mine: Vec<&mut [f32]> = slots.iter_mut().map(|s| s[i].as_mut_slice()).collect();
        optimizer_update(&mut weights[i], &total[i], &mut mine, t, h, prox);
    }
    for (i, p) in plan.params.iter().enumerate() {
        if let Some(tr) = r.get(&p.name) {
            for c in &tr.constraints {
                apply_constraint(&mut weights[i], &p.shape, c);
            }
        }
    }
    loss + reg
}

/// The constraints that run once after each epoch.
pub fn reference_epoch_end(plan: &ModelPlan, r: &Restrictions, weights: &mut [Vec<f32>]) {
    for (i, p) in plan.params.iter().enumerate() {
        if let Some(tr) = r.get(&p.name) {
            for c in &tr.epoch_constraints {
                apply_constraint(&mut weights[i], &p.shape, c);
            }
        }
    }
}
