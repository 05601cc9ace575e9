//! The parameter update, in Keras 3's `BaseOptimizer.apply` order, after the backward pass:
//!   1. the regularization loss on the pre-update weights (what Keras reports in the loss)
//!   2. the prologue every optimizer shares, inside its update shader: penalty gradient
//!      `l1·sign(w) + 2·l2·w` (no l1 term where proximal), gradient clipping (clipnorm, global_clipnorm,
//!      clipvalue; their sums of squares in a pass before), decoupled weight decay
//!   3. the optimizer's own step (Adam), then the proximal L1 soft-threshold
//!   4. the constraint passes, on the updated weights
//!
//! - `prologue`: penalties, clipping and weight decay (`update_prologue.wgsl`, prepended to every
//!   optimizer's shader), and the per-tensor table they read
//! - `adam`: Adam, its slots (m, v) and its shader; a second optimizer is one such file and one WGSL file
//! - `constraints`: the constraint passes

pub mod adam;
pub mod constraints;
pub mod prologue;

use crate::error::{Error, Result};
use crate::gpu::{Buffer, Context, KernelDef, Recorder};
use crate::model::ModelPlan;
use crate::restrict::Restrictions;

pub use adam::Adam;
pub use constraints::Constraints;
pub use prologue::Prologue;

/// Gradient clipping, as Keras optimizers take it (at most one of the three).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum GradClip {
    #[default]
    None,
    /// `clipnorm`: each tensor's gradient scaled to L2 norm <= c
    Norm(f32),
    /// `global_clipnorm`: all gradients scaled together to global L2 norm <= c
    GlobalNorm(f32),
    /// `clipvalue`: each element clipped to [-c, c]
    Value(f32),
}

/// The optimizer method and its own settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Keras' Adam: `m += (g − m)(1 − β1)`, `v += (g² − v)(1 − β2)`, `w −= m·α/(√v + ε)`
    Adam { beta1: f32, beta2: f32, eps: f32 },
}

/// An optimizer as Keras configures one: `BaseOptimizer`'s settings and the method's own (Keras'
/// defaults: Adam, lr 1e-3, β1 0.9, β2 0.999, ε 1e-7, no weight decay, no clipping).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub lr: f32,
    /// decoupled: `w -= w * weight_decay * lr` before the update (all tensors, as Keras)
    pub weight_decay: f32,
    pub clip: GradClip,
    pub method: Method,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lr: 1e-3,
            weight_decay: 0.0,
            clip: GradClip::None,
            method: Method::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-7,
            },
        }
    }
}

impl Settings {
    /// Adam with these moments and epsilon, the rest default.
    pub fn adam(beta1: f32, beta2: f32, eps: f32) -> Self {
        Settings {
            method: Method::Adam { beta1, beta2, eps },
            ..Settings::default()
        }
    }

    /// The step size of step t (1-based), in float32 and in Keras' order. Adam:
    /// `lr * sqrt(1 - beta2^t) / (1 - beta1^t)` with `powf`.
    pub fn step_size(&self, t: u64) -> f32 {
        match self.method {
            Method::Adam { beta1, beta2, .. } => {
                let tf = t as f32;
                self.lr * (1.0 - beta2.powf(tf)).sqrt() / (1.0 - beta1.powf(tf))
            }
        }
    }

    /// "adam"
    pub fn name(&self) -> &'static str {
        match self.method {
            Method::Adam { .. } => "adam",
        }
    }

    /// An error naming the setting that is out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::Config(format!(
                "learning rate must be a positive number, got {}",
                self.lr
            )));
        }
        let c = match self.clip {
            GradClip::None => None,
            GradClip::Norm(c) | GradClip::GlobalNorm(c) | GradClip::Value(c) => Some(c),
        };
        if let Some(c) = c.filter(|c| !(*c > 0.0 && c.is_finite())) {
            return Err(Error::Config(format!(
                "gradient clipping value must be a positive number, got {c}"
            )));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::Config(format!(
                "weight_decay must be >= 0, got {}",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

/// What an optimizer's update reads and writes besides its own state.
pub struct UpdateIo<'a> {
    /// the flat parameters, updated in place
    pub params: &'a Buffer,
    /// the flat data gradients of this step
    pub grads: &'a Buffer,
    /// the step state (its `batch` indexes the step-size table)
    pub state: &'a Buffer,
}

/// An optimizer on the GPU: its per-element state (slots, flat like the parameters, saved in
/// checkpoints as `optimizer/<slot>/<tensor>`) and the recording of its update, which runs the shared
/// prologue inside its own shader.
pub trait Optimizer {
    /// The slots, in checkpoint order ("m", "v").
    fn slots(&self) -> Vec<(&'static str, &Buffer)>;

    /// Record the update of every trainable tensor: its shader is the prologue's followed by its own,
    /// and `Prologue::bind` binds what the prologue part reads.
    fn record(&self, r: &mut Recorder, prologue: &Prologue, io: &UpdateIo);
}

/// Every kernel of the update: the prologue's, each optimizer's, the constraints'.
pub fn kernels() -> Vec<&'static KernelDef> {
    let mut k: Vec<&'static KernelDef> = Vec::new();
    k.extend_from_slice(prologue::KERNELS);
    k.extend_from_slice(adam::KERNELS);
    k.extend_from_slice(constraints::KERNELS);
    k
}

/// The update of a model's parameters: the prologue's tables, the optimizer, the constraints.
pub struct Update {
    pub prologue: Prologue,
    pub optimizer: Box<dyn Optimizer>,
    pub constraints: Constraints,
}

impl Update {
    /// For the parameters of `model` (flat, `grads` and slots padded to whole 64-element blocks),
    /// `steps_per_epoch` entries of step sizes.
    pub fn new(
        ctx: &Context,
        model: &ModelPlan,
        restrictions: &Restrictions,
        settings: &Settings,
        steps_per_epoch: usize,
    ) -> Result<Self> {
        settings.validate()?;
        let segments = prologue::segments(model, restrictions);
        let prologue = Prologue::new(ctx, &segments, model.flat_len, settings, steps_per_epoch)?;
        let optimizer: Box<dyn Optimizer> = match settings.method {
            Method::Adam { .. } => Box::new(Adam::new(ctx, model.flat_len, settings)),
        };
        Ok(Update {
            prologue,
            optimizer,
            constraints: Constraints::new(model, restrictions),
        })
    }

    /// A training step's update, after the backward pass: regularization loss, the optimizer (with the
    /// prologue), the per-step constraints.
    pub fn record_step(&self, r: &mut Recorder, io: &UpdateIo) {
        self.prologue.record_regularization_loss(r, io.params);
        self.prologue.record_gradient_sumsq(r, io);
        self.optimizer.record(r, &self.prologue, io);
        self.constraints.record(r, io.params, false);
    }
}
