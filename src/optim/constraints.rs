//! Keras' weight constraints as fused passes over the flat parameters, after every optimizer step (or,
//! for the tutorial's clip loop, once after each epoch), in the order the restrictions list them.
//! Shader: shaders/constraints.wgsl. Twin: `reference::apply_constraint`.

use crate::gpu::{Buffer, KernelDef, Recorder, Shader};
use crate::model::{ModelPlan, ParamSpec};
use crate::restrict::{norm_layout, Constraint, Restrictions};

pub static SHADER: Shader = crate::shader!("constraints.wgsl");

/// clip_by_value and non_neg: one invocation per element
pub static CLIP_BY_VALUE: KernelDef = KernelDef {
    name: "ClipByValue",
    shader: &SHADER,
    entry: "clip_by_value",
    constants: &[],
    gated: false,
};
/// unit_norm, max_norm, min_max_norm: one invocation per group of the norm
pub static NORM_CONSTRAINT: KernelDef = KernelDef {
    name: "NormConstraint",
    shader: &SHADER,
    entry: "norm_constraint",
    constants: &[],
    gated: false,
};

pub static KERNELS: &[&KernelDef] = &[&CLIP_BY_VALUE, &NORM_CONSTRAINT];

/// The uniform of `clip_by_value`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ClipParams {
    pub start: u32,
    pub len: u32,
    pub lo: f32,
    pub hi: f32,
    /// 0 clip_by_value, 1 non_neg
    pub kind: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}
const _: () = assert!(std::mem::size_of::<ClipParams>() == 32);

/// The uniform of `norm_constraint`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NormParams {
    pub start: u32,
    pub n_groups: u32,
    pub n_reduce: u32,
    /// 0 unit_norm, 1 max_norm, 2 min_max_norm
    pub kind: u32,
    pub min_value: f32,
    pub max_value: f32,
    pub rate: f32,
    pub eps: f32,
    pub kept_size: [u32; 4],
    pub kept_stride: [u32; 4],
    pub red_size: [u32; 4],
    pub red_stride: [u32; 4],
}
const _: () = assert!(std::mem::size_of::<NormParams>() == 96);

/// The uniform of one constraint pass over the tensor at element `offset` of the flat parameters.
pub enum ConstraintUniform {
    Clip(ClipParams),
    Norm(NormParams),
}

pub fn constraint_uniform(c: &Constraint, offset: usize, shape: &[usize]) -> ConstraintUniform {
    let len: usize = shape.iter().product();
    let clip = |lo, hi, kind| {
        ConstraintUniform::Clip(ClipParams {
            start: offset as u32,
            len: len as u32,
            lo,
            hi,
            kind,
            ..Default::default()
        })
    };
    let norm = |axes: &[usize], kind, min_value, max_value, rate| {
        let (ks, kst, rs, rst) = norm_layout(shape, axes);
        ConstraintUniform::Norm(NormParams {
            start: offset as u32,
            n_groups: ks.iter().product(),
            n_reduce: rs.iter().product(),
            kind,
            min_value,
            max_value,
            rate,
            eps: 1e-7,
            kept_size: ks,
            kept_stride: kst,
            red_size: rs,
            red_stride: rst,
        })
    };
    match c {
        Constraint::ClipByValue { lo, hi } => clip(*lo, *hi, 0),
        Constraint::NonNeg => clip(0.0, 0.0, 1),
        Constraint::UnitNorm { axes } => norm(axes, 0, 0.0, 0.0, 0.0),
        Constraint::MaxNorm { max_value, axes } => norm(axes, 1, 0.0, *max_value, 0.0),
        Constraint::MinMaxNorm {
            min_value,
            max_value,
            rate,
            axes,
        } => norm(axes, 2, *min_value, *max_value, *rate),
    }
}

/// Record one constraint pass over the tensor of Keras `shape` at element `offset` of the flat `params`.
pub fn record(r: &mut Recorder, params: &Buffer, c: &Constraint, offset: usize, shape: &[usize]) {
    record_many(r, params, std::slice::from_ref(c), offset, shape)
}

/// `record` for K models stepping together, model m constrained by `cs[m]` (constraints of one kind,
/// whose values go into a per-model table).
pub fn record_many(
    r: &mut Recorder,
    params: &Buffer,
    cs: &[Constraint],
    offset: usize,
    shape: &[usize],
) {
    let all: Vec<ConstraintUniform> = cs
        .iter()
        .map(|c| constraint_uniform(c, offset, shape))
        .collect();
    let ctx = r.ctx;
    match &all[0] {
        ConstraintUniform::Clip(cp) => {
            let u = if all.len() == 1 {
                r.uniform("clip", cp)
            } else {
                let v: Vec<ClipParams> = all
                    .iter()
                    .filter_map(|u| match u {
                        ConstraintUniform::Clip(c) => Some(*c),
                        _ => None,
                    })
                    .collect();
                ctx.per_model_table("clip per model", &v)
            };
            let grid = r.grid_1d(cp.len as usize, 64);
            r.dispatch(&CLIP_BY_VALUE)
                .bind("C", &u)
                .bind("params", params)
                .grid(grid);
        }
        ConstraintUniform::Norm(np) => {
            let u = if all.len() == 1 {
                r.uniform("norm", np)
            } else {
                let v: Vec<NormParams> = all
                    .iter()
                    .filter_map(|u| match u {
                        ConstraintUniform::Norm(n) => Some(*n),
                        _ => None,
                    })
                    .collect();
                ctx.per_model_table("norm per model", &v)
            };
            r.dispatch(&NORM_CONSTRAINT)
                .bind("N", &u)
                .bind("params", params)
                .grid((np.n_groups.div_ceil(64), 1, 1));
        }
    }
}

/// The constraints of a model's tensors: (tensor, constraint) after every step and after each epoch;
/// for K models stepping together, the K models' constraints of each.
pub struct Constraints {
    per_step: Vec<(ParamSpec, Vec<Constraint>)>,
    per_epoch: Vec<(ParamSpec, Vec<Constraint>)>,
}

type Passes = Vec<(ParamSpec, Constraint)>;

/// The constraint passes of one model's `restrictions`: (tensor, constraint), per step and per epoch.
fn passes(model: &ModelPlan, restrictions: &Restrictions) -> (Passes, Passes) {
    let (mut per_step, mut per_epoch) = (Vec::new(), Vec::new());
    for (name, t) in &restrictions.tensors {
        let Some(p) = model.param(name) else {
            continue; // Restrictions::validate names it
        };
        per_step.extend(t.constraints.iter().map(|k| (p.clone(), k.clone())));
        per_epoch.extend(t.epoch_constraints.iter().map(|k| (p.clone(), k.clone())));
    }
    (per_step, per_epoch)
}

/// The kind of a constraint pass, and what shapes its grid (the norm's axes): models stepping together
/// must agree on it.
fn pass_kind(c: &Constraint) -> (u8, Vec<usize>) {
    match c {
        Constraint::ClipByValue { .. } | Constraint::NonNeg => (0, Vec::new()),
        Constraint::UnitNorm { axes }
        | Constraint::MaxNorm { axes, .. }
        | Constraint::MinMaxNorm { axes, .. } => (1, axes.clone()),
    }
}

impl Constraints {
    pub fn new(model: &ModelPlan, restrictions: &Restrictions) -> Self {
        Self::new_many(model, &[restrictions])
            .expect("one model's constraints agree with themselves")
    }

    /// The constraints of K models stepping together: the same passes (tensor, kind, axes) in the same
    /// order, with their own values; refused otherwise.
    pub fn new_many(
        model: &ModelPlan,
        restrictions: &[&Restrictions],
    ) -> crate::error::Result<Self> {
        let mut c = Constraints {
            per_step: Vec::new(),
            per_epoch: Vec::new(),
        };
        for (m, r) in restrictions.iter().enumerate() {
            let (step, epoch) = passes(model, r);
            for (list, new) in [(&mut c.per_step, step), (&mut c.per_epoch, epoch)] {
                if m == 0 {
                    list.extend(new.into_iter().map(|(p, k)| (p, vec![k])));
                    continue;
                }
                let same = list.len() == new.len()
                    && list.iter().zip(&new).all(|((p, ks), (q, k))| {
                        p.name == q.name && pass_kind(&ks[0]) == pass_kind(k)
                    });
                if !same {
                    return Err(crate::error::Error::Config(
                        "models stepping together must have the same kinds of constraints on the same tensors".into(),
                    ));
                }
                for ((_, ks), (_, k)) in list.iter_mut().zip(new) {
                    ks.push(k);
                }
            }
        }
        Ok(c)
    }

    /// Record the passes after every step, or (`epoch_end`) those after each epoch.
    pub fn record(&self, r: &mut Recorder, params: &Buffer, epoch_end: bool) {
        let list = if epoch_end {
            &self.per_epoch
        } else {
            &self.per_step
        };
        for (p, cs) in list {
            record_many(r, params, cs, p.offset, &p.shape);
        }
    }
}
