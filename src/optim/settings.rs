//! An optimizer's settings, as Keras configures one: plain data (the CPU twins read them too).

use crate::error::{Error, Result};

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
