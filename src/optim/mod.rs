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
//! - `adam` (Adam and AdamW), `sgd`, `rmsprop`: each optimizer, its slots and its shader; another
//!   optimizer is one such file and one WGSL file (plus its settings in `settings::Method` and a line in
//!   `kernels()` and in `Update::new`)
//! - `constraints`: the constraint passes
//! - `settings`: what configures an optimizer (plain data, read by the CPU twins too)

pub mod adam;
pub mod constraints;
pub mod prologue;
pub mod rmsprop;
pub mod settings;
pub mod sgd;

use crate::error::{Error, Result};
use crate::gpu::{Buffer, Context, KernelDef, Recorder};
use crate::model::ModelPlan;
use crate::restrict::Restrictions;

pub use adam::Adam;
pub use constraints::Constraints;
pub use prologue::Prologue;
pub use rmsprop::RmsProp;
pub use settings::{GradClip, Method, Schedule, Settings};
pub use sgd::Sgd;

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
pub trait Optimizer: Send + Sync {
    /// The slots, in checkpoint order (`Method::slot_names`: "m", "v" for Adam).
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
    k.extend_from_slice(sgd::KERNELS);
    k.extend_from_slice(rmsprop::KERNELS);
    k.extend_from_slice(constraints::KERNELS);
    k
}

/// The GPU optimizer `settings` name, for flat parameters of `n` elements.
pub fn build_optimizer(ctx: &Context, n: usize, settings: &Settings) -> Box<dyn Optimizer> {
    match settings.method {
        Method::Adam { beta1, beta2, eps } | Method::AdamW { beta1, beta2, eps } => {
            Box::new(Adam::new(ctx, n, (beta1, beta2, eps)))
        }
        Method::Sgd { momentum, nesterov } => Box::new(Sgd::new(ctx, n, momentum, nesterov)),
        Method::RmsProp {
            rho,
            momentum,
            eps,
            centered,
        } => Box::new(RmsProp::new(ctx, n, rho, momentum, eps, centered)),
    }
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
        Self::new_many(ctx, model, &[(restrictions, settings)], steps_per_epoch)
    }

    /// The update of K models stepping together (inside `with_models(K)`): one per (restrictions,
    /// settings). Their settings may differ in the learning rate (and its schedule) only, their
    /// restrictions in values, not in kinds (`Constraints::new_many`).
    pub fn new_many(
        ctx: &Context,
        model: &ModelPlan,
        parts: &[(&Restrictions, &Settings)],
        steps_per_epoch: usize,
    ) -> Result<Self> {
        let &(restrictions, settings) = parts
            .first()
            .ok_or_else(|| Error::Model("an update of no models".into()))?;
        for (r, s) in parts {
            s.validate()?;
            let mut same = **s;
            same.lr = settings.lr;
            same.schedule = settings.schedule;
            if same != *settings {
                return Err(Error::Config(
                    "models stepping together must share their optimizer settings but the learning rate".into(),
                ));
            }
            let proximal = r
                .tensors
                .iter()
                .find(|(_, t)| t.regularizer.is_some_and(|r| r.proximal));
            if let (Some((name, _)), false) = (proximal, s.method.proximal_defined()) {
                return Err(Error::Config(format!(
                    "{name}: proximal L1 needs the optimizer's own per-element step size, which {} with momentum does not have: drop `proximal` or the momentum",
                    s.method.keras_class()
                )));
            }
        }
        let segments = prologue::segments(model, restrictions);
        let mut prologue =
            Prologue::new(ctx, &segments, model.flat_len, settings, steps_per_epoch)?;
        for (m, (r, s)) in parts.iter().enumerate().skip(1) {
            prologue.set_model(ctx, m, s, &prologue::segments(model, r));
        }
        let all: Vec<&Restrictions> = parts.iter().map(|(r, _)| *r).collect();
        Ok(Update {
            prologue,
            optimizer: build_optimizer(ctx, model.flat_len, settings),
            constraints: Constraints::new_many(model, &all)?,
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
