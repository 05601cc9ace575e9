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
    /// Keras' AdamW: Adam's update, with decoupled weight decay (its default 0.004 is `Settings`')
    AdamW { beta1: f32, beta2: f32, eps: f32 },
    /// Keras' SGD: `m = m·momentum − g·lr`, then `w += m` (nesterov: `w += m·momentum − g·lr`);
    /// without momentum `w −= g·lr`
    Sgd { momentum: f32, nesterov: bool },
    /// Keras' RMSprop: `v = ρv + (1−ρ)g²`; centered: `a = ρa + (1−ρ)g`, `d = v − a² + ε`, else
    /// `d = v + ε` (ε inside the square root); `inc = lr·g/√d`; momentum: `mom = momentum·mom + inc`,
    /// `w −= mom`, else `w −= inc`
    RmsProp {
        rho: f32,
        momentum: f32,
        eps: f32,
        centered: bool,
    },
}

impl Method {
    /// Keras' defaults of each optimizer class ("adam", "adamw", "sgd", "rmsprop").
    pub fn keras_default(name: &str) -> Option<Method> {
        Some(match name {
            "adam" => Method::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-7,
            },
            "adamw" => Method::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-7,
            },
            "sgd" => Method::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            "rmsprop" => Method::RmsProp {
                rho: 0.9,
                momentum: 0.0,
                eps: 1e-7,
                centered: false,
            },
            _ => return None,
        })
    }

    /// Keras' class name.
    pub fn keras_class(&self) -> &'static str {
        match self {
            Method::Adam { .. } => "Adam",
            Method::AdamW { .. } => "AdamW",
            Method::Sgd { .. } => "SGD",
            Method::RmsProp { .. } => "RMSprop",
        }
    }

    /// The optimizer's per-element state, in checkpoint order (`optimizer/<slot>/<tensor>`).
    pub fn slot_names(&self) -> Vec<&'static str> {
        match *self {
            Method::Adam { .. } | Method::AdamW { .. } => vec!["m", "v"],
            Method::Sgd { momentum, .. } if momentum > 0.0 => vec!["momentum"],
            Method::Sgd { .. } => vec![],
            Method::RmsProp {
                momentum, centered, ..
            } => {
                let mut s = vec!["velocity"];
                if momentum > 0.0 {
                    s.push("momentum");
                }
                if centered {
                    s.push("average_gradient");
                }
                s
            }
        }
    }

    /// Keras' optimizer variables of the slots are interleaved per model variable (Adam: momentum,
    /// velocity of each in turn) rather than one slot after the other (SGD, RMSprop).
    pub fn keras_interleaved(&self) -> bool {
        matches!(self, Method::Adam { .. } | Method::AdamW { .. })
    }

    /// The proximal L1 step is defined: an update whose per-element step size is known (Adam, and SGD
    /// and RMSprop without momentum).
    pub fn proximal_defined(&self) -> bool {
        match *self {
            Method::Adam { .. } | Method::AdamW { .. } => true,
            Method::Sgd { momentum, .. } | Method::RmsProp { momentum, .. } => momentum == 0.0,
        }
    }
}

/// The most boundaries a `PiecewiseConstantDecay` may have.
pub const MAX_PIECES: usize = 16;

/// Keras' learning-rate schedules, evaluated at the optimizer's `iterations` before its increment
/// (step 0 first), in float32 as Keras computes them; their initial learning rate is `Settings::lr`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Schedule {
    #[default]
    Constant,
    /// `lr · rate^(step / decay_steps)` (the exponent floored when `staircase`)
    ExponentialDecay {
        decay_steps: f32,
        decay_rate: f32,
        staircase: bool,
    },
    /// `lr / (1 + rate · step / decay_steps)` (floored when `staircase`)
    InverseTimeDecay {
        decay_steps: f32,
        decay_rate: f32,
        staircase: bool,
    },
    /// linear warmup from `lr` to `warmup_target` over `warmup_steps` (when a target is set), then
    /// `from · ((1 − alpha) · ½(1 + cos(π · min(step, decay_steps) / decay_steps)) + alpha)`
    CosineDecay {
        decay_steps: f32,
        alpha: f32,
        warmup_target: Option<f32>,
        warmup_steps: f32,
    },
    /// `values[i]` for `boundaries[i−1] < step <= boundaries[i]` (`n` boundaries, `n + 1` values)
    PiecewiseConstantDecay {
        n: usize,
        boundaries: [i64; MAX_PIECES],
        values: [f32; MAX_PIECES + 1],
    },
}

impl Schedule {
    /// Keras' class name (None for a constant rate).
    pub fn keras_class(&self) -> Option<&'static str> {
        match self {
            Schedule::Constant => None,
            Schedule::ExponentialDecay { .. } => Some("ExponentialDecay"),
            Schedule::InverseTimeDecay { .. } => Some("InverseTimeDecay"),
            Schedule::CosineDecay { .. } => Some("CosineDecay"),
            Schedule::PiecewiseConstantDecay { .. } => Some("PiecewiseConstantDecay"),
        }
    }

    /// The learning rate at `step` (0-based) from the initial rate `lr`, in Keras' float32 order.
    pub fn at(&self, lr: f32, step: u64) -> f32 {
        let s = step as f32;
        match *self {
            Schedule::Constant => lr,
            Schedule::ExponentialDecay {
                decay_steps,
                decay_rate,
                staircase,
            } => {
                let p = s / decay_steps;
                let p = if staircase { p.floor() } else { p };
                lr * decay_rate.powf(p)
            }
            Schedule::InverseTimeDecay {
                decay_steps,
                decay_rate,
                staircase,
            } => {
                let p = s / decay_steps;
                let p = if staircase { p.floor() } else { p };
                lr / (1.0 + decay_rate * p)
            }
            Schedule::CosineDecay {
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                let decay = |step: f32, from: f32| {
                    let completed = step / decay_steps;
                    let cosine = 0.5 * (1.0 + (std::f32::consts::PI * completed).cos());
                    let alpha64 = alpha as f64;
                    // Keras: (1 - alpha) * cosine_decayed + alpha, with alpha a Python float
                    let decayed = ((1.0 - alpha64) as f32) * cosine + alpha;
                    from * decayed
                };
                match warmup_target {
                    None => decay(s.min(decay_steps), lr),
                    Some(target) => {
                        let s = s.min(decay_steps + warmup_steps);
                        if s < warmup_steps {
                            (target - lr) * (s / warmup_steps) + lr
                        } else {
                            decay(s - warmup_steps, target)
                        }
                    }
                }
            }
            Schedule::PiecewiseConstantDecay {
                n,
                boundaries,
                values,
            } => {
                let step = step as i64;
                if step <= boundaries[0] {
                    return values[0];
                }
                for i in 1..n {
                    if step > boundaries[i - 1] && step <= boundaries[i] {
                        return values[i];
                    }
                }
                values[n]
            }
        }
    }
}

/// An optimizer as Keras configures one: `BaseOptimizer`'s settings and the method's own (Keras'
/// defaults: Adam, lr 1e-3, β1 0.9, β2 0.999, ε 1e-7, no weight decay, no clipping).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// the learning rate, or a schedule's initial learning rate
    pub lr: f32,
    /// decoupled: `w -= w * weight_decay * lr` before the update (all tensors, as Keras)
    pub weight_decay: f32,
    pub clip: GradClip,
    pub method: Method,
    pub schedule: Schedule,
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
            schedule: Schedule::Constant,
        }
    }
}

impl Settings {
    /// The learning rate of step t (1-based): the schedule at Keras' `iterations` = t − 1.
    pub fn lr_at(&self, t: u64) -> f32 {
        self.schedule.at(self.lr, t.saturating_sub(1))
    }

    /// The step size of step t (1-based), in float32 and in Keras' order. Adam:
    /// `lr_t * sqrt(1 - beta2^t) / (1 - beta1^t)` with `powf`; SGD and RMSprop: `lr_t`.
    pub fn step_size(&self, t: u64) -> f32 {
        let lr = self.lr_at(t);
        match self.method {
            Method::Adam { beta1, beta2, .. } | Method::AdamW { beta1, beta2, .. } => {
                let tf = t as f32;
                lr * (1.0 - beta2.powf(tf)).sqrt() / (1.0 - beta1.powf(tf))
            }
            Method::Sgd { .. } | Method::RmsProp { .. } => lr,
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
        let bad = |what: &str, v: f32, ok: bool| -> Result<()> {
            if ok && v.is_finite() {
                Ok(())
            } else {
                Err(Error::Config(format!("{what} is out of range, got {v}")))
            }
        };
        match self.method {
            Method::Adam { beta1, beta2, eps } | Method::AdamW { beta1, beta2, eps } => {
                bad("beta_1", beta1, (0.0..1.0).contains(&beta1))?;
                bad("beta_2", beta2, (0.0..1.0).contains(&beta2))?;
                bad("epsilon", eps, eps > 0.0)?;
            }
            Method::Sgd { momentum, .. } => {
                bad("momentum", momentum, (0.0..=1.0).contains(&momentum))?
            }
            Method::RmsProp {
                rho, momentum, eps, ..
            } => {
                bad("rho", rho, (0.0..1.0).contains(&rho))?;
                bad("momentum", momentum, (0.0..=1.0).contains(&momentum))?;
                bad("epsilon", eps, eps > 0.0)?;
            }
        }
        match self.schedule {
            Schedule::Constant => {}
            Schedule::ExponentialDecay {
                decay_steps,
                decay_rate,
                ..
            }
            | Schedule::InverseTimeDecay {
                decay_steps,
                decay_rate,
                ..
            } => {
                bad("decay_steps", decay_steps, decay_steps > 0.0)?;
                bad("decay_rate", decay_rate, decay_rate >= 0.0)?;
            }
            Schedule::CosineDecay {
                decay_steps,
                alpha,
                warmup_target,
                warmup_steps,
            } => {
                bad("decay_steps", decay_steps, decay_steps > 0.0)?;
                bad("alpha", alpha, (0.0..=1.0).contains(&alpha))?;
                bad("warmup_steps", warmup_steps, warmup_steps >= 0.0)?;
                if let Some(t) = warmup_target {
                    bad("warmup_target", t, t > 0.0)?;
                    bad("warmup_steps", warmup_steps, warmup_steps > 0.0)?;
                }
            }
            Schedule::PiecewiseConstantDecay {
                n,
                boundaries,
                values,
            } => {
                if n == 0 || n > MAX_PIECES {
                    return Err(Error::Config(format!(
                        "PiecewiseConstantDecay takes 1 to {MAX_PIECES} boundaries, got {n}"
                    )));
                }
                if boundaries[..n].windows(2).any(|w| w[0] >= w[1]) {
                    return Err(Error::Config(
                        "PiecewiseConstantDecay boundaries must increase".into(),
                    ));
                }
                for &v in &values[..=n] {
                    bad("a PiecewiseConstantDecay value", v, v > 0.0)?;
                }
            }
        }
        Ok(())
    }
}
