//! Kernel restrictions, Keras' vocabulary: regularizers (penalty gradients folded into the Adam shader)
//! and constraints (fused passes after every optimizer step), and the five presets.

use crate::error::{Error, Result};
use crate::model::{LayerSpec, ModelPlan, Role};

/// `l1 * sum|w| + l2 * sum w^2` (Keras `l1`, `l2`, `l1_l2`).
///
/// `proximal` (beyond Keras): the L1 term is not added to the gradient; instead, after the Adam step,
/// `w <- sign(w) * max(|w| - lr_eff * l1, 0)` with `lr_eff = alpha_t / (sqrt(v) + eps)`, Adam's own
/// per-element step size, so that L1 produces weights that are exactly zero. The L2 term stays a gradient.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Regularizer {
    pub l1: f32,
    pub l2: f32,
    pub proximal: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// `min(max(w, lo), hi)` (the tutorial's clip_by_value)
    ClipByValue { lo: f32, hi: f32 },
    /// `w / (1e-7 + n)`, n = L2 norm over `axes` of the Keras-layout tensor
    UnitNorm { axes: Vec<usize> },
    /// `w * clip(n, 0, max) / (1e-7 + n)`
    MaxNorm { max_value: f32, axes: Vec<usize> },
    /// `w * (rate * clip(n, min, max) + (1 - rate) * n) / (1e-7 + n)`
    MinMaxNorm {
        min_value: f32,
        max_value: f32,
        rate: f32,
        axes: Vec<usize>,
    },
    /// `max(w, 0)`
    NonNeg,
}

/// What is applied to one tensor.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TensorRestriction {
    pub regularizer: Option<Regularizer>,
    /// applied after every optimizer step (Keras' kernel_constraint / bias_constraint)
    pub constraints: Vec<Constraint>,
    /// applied once after each epoch (the Keras tutorial's `clip_weights` loop)
    pub epoch_constraints: Vec<Constraint>,
}

/// Restrictions by Keras tensor name ("conv2d.kernel", ...).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Restrictions {
    pub tensors: Vec<(String, TensorRestriction)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// no restriction
    None,
    /// l1(0.01) on conv kernels, l2(0.01) on dense kernels
    L1l2,
    /// conv kernels and biases clipped to [-1, 1] after every step
    Clip,
    /// per-filter unit norm of conv kernels (axes [0, 1, 2])
    Unitnorm,
    /// l2(0.01) on conv kernels + the clip constraint
    Combo,
}

impl Restrictions {
    pub fn entry(&mut self, name: &str) -> &mut TensorRestriction {
        if let Some(i) = self.tensors.iter().position(|(n, _)| n == name) {
            return &mut self.tensors[i].1;
        }
        self.tensors
            .push((name.to_string(), TensorRestriction::default()));
        &mut self.tensors.last_mut().unwrap().1
    }

    pub fn get(&self, name: &str) -> Option<&TensorRestriction> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }

    /// The preset applied to every conv2d / dense layer of the model (the reference model has one of each).
    pub fn preset(preset: Preset, model: &ModelPlan) -> Self {
        let mut r = Restrictions::default();
        for p in &model.params {
            let is_conv = matches!(model.layers[p.layer].spec, LayerSpec::Conv2d(_));
            let is_dense = matches!(model.layers[p.layer].spec, LayerSpec::Dense(_));
            let kernel = p.role == Role::Kernel;
            match preset {
                Preset::None => {}
                Preset::L1l2 => {
                    if is_conv && kernel {
                        r.entry(&p.name).regularizer = Some(Regularizer {
                            l1: 0.01,
                            l2: 0.0,
                            proximal: false,
                        });
                    }
                    if is_dense && kernel {
                        r.entry(&p.name).regularizer = Some(Regularizer {
                            l1: 0.0,
                            l2: 0.01,
                            proximal: false,
                        });
                    }
                }
                Preset::Clip | Preset::Combo => {
                    if is_conv {
                        r.entry(&p.name)
                            .constraints
                            .push(Constraint::ClipByValue { lo: -1.0, hi: 1.0 });
                        if preset == Preset::Combo && kernel {
                            r.entry(&p.name).regularizer = Some(Regularizer {
                                l1: 0.0,
                                l2: 0.01,
                                proximal: false,
                            });
                        }
                    }
                }
                Preset::Unitnorm => {
                    if is_conv && kernel {
                        r.entry(&p.name).constraints.push(Constraint::UnitNorm {
                            axes: vec![0, 1, 2],
                        });
                    }
                }
            }
        }
        r
    }

    /// Check every name exists in the model and every value is allowed.
    pub fn validate(&self, model: &ModelPlan) -> Result<()> {
        for (name, t) in &self.tensors {
            let p = model.param(name).ok_or_else(|| {
                let names: Vec<&str> = model.params.iter().map(|p| p.name.as_str()).collect();
                Error::Config(format!(
                    "restriction on unknown tensor '{name}'; the model has {}",
                    names.join(", ")
                ))
            })?;
            if !p.trainable {
                return Err(Error::Config(format!(
                    "{name} is not trainable (a moving statistic): it takes no regularizer or constraint"
                )));
            }
            if let Some(reg) = t.regularizer {
                if !(reg.l1 >= 0.0 && reg.l2 >= 0.0 && reg.l1.is_finite() && reg.l2.is_finite()) {
                    return Err(Error::Config(format!(
                        "{name}: regularizer factors must be finite and >= 0, got l1 = {}, l2 = {}",
                        reg.l1, reg.l2
                    )));
                }
            }
            for c in t.constraints.iter().chain(&t.epoch_constraints) {
                match c {
                    Constraint::ClipByValue { lo, hi } => {
                        // also rejects NaN bounds
                        if lo
                            .partial_cmp(hi)
                            .is_none_or(|o| o == std::cmp::Ordering::Greater)
                        {
                            return Err(Error::Config(format!(
                                "{name}: clip min ({lo}) must not exceed max ({hi})"
                            )));
                        }
                    }
                    Constraint::UnitNorm { axes }
                    | Constraint::MaxNorm { axes, .. }
                    | Constraint::MinMaxNorm { axes, .. } => {
                        if axes.is_empty() || axes.iter().any(|&a| a >= p.shape.len()) {
                            return Err(Error::Config(format!(
                                "{name}: constraint axes {axes:?} must be non-empty and below the tensor rank {} (shape {:?})",
                                p.shape.len(),
                                p.shape
                            )));
                        }
                    }
                    Constraint::NonNeg => {}
                }
                if let Constraint::MinMaxNorm {
                    min_value,
                    max_value,
                    ..
                } = c
                {
                    if min_value > max_value {
                        return Err(Error::Config(format!(
                            "{name}: min_max_norm min_value must not exceed max_value"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Split a Keras-layout tensor of `shape` into groups for a norm over `axes`: (kept sizes, kept strides,
/// reduced sizes, reduced strides), each padded to 4 axes with size 1 at the front (outermost).
pub fn norm_layout(shape: &[usize], axes: &[usize]) -> ([u32; 4], [u32; 4], [u32; 4], [u32; 4]) {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let mut kept = Vec::new();
    let mut red = Vec::new();
    for a in 0..rank {
        if axes.contains(&a) {
            red.push((shape[a] as u32, strides[a] as u32));
        } else {
            kept.push((shape[a] as u32, strides[a] as u32));
        }
    }
    let pad = |v: Vec<(u32, u32)>| {
        let mut size = [1u32; 4];
        let mut stride = [0u32; 4];
        let off = 4 - v.len();
        for (i, (s, st)) in v.into_iter().enumerate() {
            size[off + i] = s;
            stride[off + i] = st;
        }
        (size, stride)
    };
    let (ks, kst) = pad(kept);
    let (rs, rst) = pad(red);
    (ks, kst, rs, rst)
}
