//! Whole-model twin: forward, backward and one training step of a `ModelPlan`, built from the layer
//! twins, in the same order as the GPU step.

use super::layers::*;
use super::optim::*;
use crate::model::{Activation, LayerSpec, ModelPlan, Padding, Shape};
use crate::restrict::{Regularizer, Restrictions};
use crate::train::Hyper;

pub struct Forward {
    /// output of each layer (after its activation; logits for the softmax layer)
    pub acts: Vec<Vec<f64>>,
    pub argmax: Vec<Option<Vec<u32>>>,
}

fn conv_dims(plan: &ModelPlan, i: usize, batch: usize) -> (ConvDims, bool) {
    let l = &plan.layers[i];
    match (&l.spec, l.input) {
        (
            LayerSpec::Conv2d {
                filters,
                kernel_size,
                padding,
                activation,
            },
            Shape::Spatial { h, w, c },
        ) => (
            ConvDims::new(
                batch,
                h,
                w,
                c,
                *filters,
                *kernel_size,
                *padding == Padding::Same,
            ),
            *activation == Activation::Relu,
        ),
        _ => unreachable!("not a conv layer"),
    }
}

fn pool_dims(plan: &ModelPlan, i: usize, batch: usize) -> PoolDims {
    let l = &plan.layers[i];
    match (&l.spec, l.input) {
        (LayerSpec::MaxPool2d { pool_size }, Shape::Spatial { h, w, c }) => PoolDims {
            batch,
            in_h: h,
            in_w: w,
            c,
            k: *pool_size,
        },
        _ => unreachable!("not a pool layer"),
    }
}

pub fn model_forward(plan: &ModelPlan, weights: &[Vec<f64>], x: &[f64], batch: usize) -> Forward {
    let mut acts: Vec<Vec<f64>> = Vec::new();
    let mut argmax = Vec::new();
    for (i, l) in plan.layers.iter().enumerate() {
        let input = if i == 0 { x } else { &acts[i - 1] };
        let (out, arg) = match &l.spec {
            LayerSpec::Conv2d { .. } => {
                let (d, relu) = conv_dims(plan, i, batch);
                let (k, b) = l.params.unwrap();
                (
                    conv2d_forward(&d, input, &weights[k], &weights[b], relu),
                    None,
                )
            }
            LayerSpec::MaxPool2d { .. } => {
                let (y, a) = maxpool_forward(&pool_dims(plan, i, batch), input);
                (y, Some(a))
            }
            LayerSpec::Flatten => (input.to_vec(), None),
            LayerSpec::Dense { activation, .. } => {
                let (k, b) = l.params.unwrap();
                (
                    dense_forward(
                        batch,
                        l.input.len(),
                        l.output.len(),
                        input,
                        &weights[k],
                        &weights[b],
                        *activation == Activation::Relu,
                    ),
                    None,
                )
            }
        };
        acts.push(out);
        argmax.push(arg);
    }
    Forward { acts, argmax }
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
        let input = if i == 0 { x } else { &fwd.acts[i - 1] };
        dy = match &l.spec {
            LayerSpec::Conv2d { .. } => {
                let (d, relu) = conv_dims(plan, i, batch);
                let (k, b) = l.params.unwrap();
                let (dk, db, dx) = conv2d_backward(&d, input, &weights[k], &fwd.acts[i], &dy, relu);
                grads[k] = dk;
                grads[b] = db;
                dx
            }
            LayerSpec::MaxPool2d { .. } => maxpool_backward(
                &pool_dims(plan, i, batch),
                fwd.argmax[i].as_ref().unwrap(),
                &dy,
            ),
            LayerSpec::Flatten => dy,
            LayerSpec::Dense { activation, .. } => {
                let (k, b) = l.params.unwrap();
                let (dw, db, dx) = dense_backward(
                    batch,
                    l.input.len(),
                    l.output.len(),
                    input,
                    &weights[k],
                    &fwd.acts[i],
                    &dy,
                    *activation == Activation::Relu,
                );
                grads[k] = dw;
                grads[b] = db;
                dx
            }
        };
    }
    grads
}

/// (mean cross-entropy, gradients, logits, number correct) for one batch.
pub fn model_loss_grads(
    plan: &ModelPlan,
    weights: &[Vec<f64>],
    x: &[f64],
    labels: &[u32],
) -> (f64, Vec<Vec<f64>>, Vec<f64>, usize) {
    let batch = labels.len();
    let fwd = model_forward(plan, weights, x, batch);
    let logits = fwd.acts.last().unwrap().clone();
    let (ce, dl, correct) = softmax_xent(batch, plan.classes, &logits, labels);
    let grads = model_backward(plan, weights, x, &fwd, dl, batch);
    (
        ce.iter().sum::<f64>() / batch as f64,
        grads,
        logits,
        correct.iter().filter(|&&c| c).count(),
    )
}

/// One full training step, the GPU order: loss and gradients, regularization loss on the pre-update
/// weights, penalty gradients, gradient clipping, weight decay + Adam (+ proximal L1), then the
/// per-step constraints. Returns the loss Keras reports.
#[allow(clippy::too_many_arguments)]
pub fn reference_step(
    plan: &ModelPlan,
    r: &Restrictions,
    h: &Hyper,
    weights: &mut [Vec<f32>],
    m: &mut [Vec<f32>],
    v: &mut [Vec<f32>],
    t: u64,
    x: &[f32],
    labels: &[u32],
) -> f64 {
    let w64: Vec<Vec<f64>> = weights
        .iter()
        .map(|w| w.iter().map(|&v| v as f64).collect())
        .collect();
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (loss, grads, _, _) = model_loss_grads(plan, &w64, &x64, labels);
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
        let prox = if regs[i].proximal { regs[i].l1 } else { 0.0 };
        adam_update(&mut weights[i], &total[i], &mut m[i], &mut v[i], t, h, prox);
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
