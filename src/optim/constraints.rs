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
    /// 0 clip_by_value, 1 non_neg, 2 none (`CLIP_NONE`)
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
    /// 0 unit_norm, 1 max_norm, 2 min_max_norm, 3 none (`NORM_NONE`)
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

/// `ClipParams::kind` and `NormParams::kind` of a model that has no such pass on the tensor (K models
/// stepping together: the pass leaves that model's tensor alone).
pub const CLIP_NONE: u32 = 2;
pub const NORM_NONE: u32 = 3;

/// Record one constraint pass over the tensor of Keras `shape` at element `offset` of the flat `params`.
pub fn record(r: &mut Recorder, params: &Buffer, c: &Constraint, offset: usize, shape: &[usize]) {
    record_many(r, params, &[Some(c.clone())], offset, shape)
}

/// `record` for K models stepping together, model m constrained by `cs[m]` (constraints of one kind,
/// whose values go into a per-model table; None: none on this model).
pub fn record_many(
    r: &mut Recorder,
    params: &Buffer,
    cs: &[Option<Constraint>],
    offset: usize,
    shape: &[usize],
) {
    let Some(first) = cs.iter().flatten().next() else {
        return;
    };
    // each model's uniform: its own constraint's, or the first's shape with the kind "none" (all of
    // one kind: `Constraints::new_many` checks it)
    let (mut clips, mut norms): (Vec<ClipParams>, Vec<NormParams>) = (Vec::new(), Vec::new());
    for c in cs {
        match constraint_uniform(c.as_ref().unwrap_or(first), offset, shape) {
            ConstraintUniform::Clip(mut p) => {
                if c.is_none() {
                    p.kind = CLIP_NONE;
                }
                clips.push(p);
            }
            ConstraintUniform::Norm(mut p) => {
                if c.is_none() {
                    p.kind = NORM_NONE;
                }
                norms.push(p);
            }
        }
    }
    if let Some(cp) = clips.first() {
        let u = table(r, "clip", &clips);
        let grid = r.grid_1d(cp.len as usize, 64);
        r.dispatch(&CLIP_BY_VALUE)
            .bind("C", &u)
            .bind("params", params)
            .grid(grid);
    } else if let Some(np) = norms.first() {
        let u = table(r, "norm", &norms);
        r.dispatch(&NORM_CONSTRAINT)
            .bind("N", &u)
            .bind("params", params)
            .grid((np.n_groups.div_ceil(64), 1, 1));
    }
}

/// One model's uniform, or K models' values as a per-model table (what a K-model kernel reads).
fn table<T: bytemuck::Pod>(r: &mut Recorder, label: &str, values: &[T]) -> Buffer {
    match values {
        [one] => r.uniform(label, one),
        _ => r.ctx.per_model_table(&format!("{label} per model"), values),
    }
}

/// The constraint passes of one or K models: (tensor, each model's constraint) after every step and
/// after each epoch.
pub struct Constraints {
    per_step: Vec<(ParamSpec, Vec<Option<Constraint>>)>,
    per_epoch: Vec<(ParamSpec, Vec<Option<Constraint>>)>,
}

/// Per tensor (in order of first appearance), each model's constraints on it.
type ByTensor = Vec<(ParamSpec, Vec<Vec<Constraint>>)>;

/// The kind of a constraint pass, and what shapes its grid (the norm's axes): models stepping together
/// must agree on it.
pub fn pass_kind(c: &Constraint) -> (u8, Vec<usize>) {
    match c {
        Constraint::ClipByValue { .. } | Constraint::NonNeg => (0, Vec::new()),
        Constraint::UnitNorm { axes }
        | Constraint::MaxNorm { axes, .. }
        | Constraint::MinMaxNorm { axes, .. } => (1, axes.clone()),
    }
}

/// Whether runs with these constraints on one tensor can step together: each has none, or all that
/// have some have passes of the same kinds in the same order.
pub fn compatible<'c>(lists: impl IntoIterator<Item = &'c [Constraint]>) -> bool {
    let mut kinds: Option<Vec<(u8, Vec<usize>)>> = None;
    for l in lists.into_iter().filter(|l| !l.is_empty()) {
        let k: Vec<_> = l.iter().map(pass_kind).collect();
        match &kinds {
            Some(first) if *first != k => return false,
            Some(_) => {}
            None => kinds = Some(k),
        }
    }
    true
}

impl Constraints {
    pub fn new(model: &ModelPlan, restrictions: &Restrictions) -> Self {
        Self::new_many(model, &[restrictions])
            .expect("one model's constraints agree with themselves")
    }

    /// The constraints of K models stepping together. On each tensor, a model has none, or the same
    /// kinds of passes in the same order as every other model that has some (`compatible`); each pass
    /// runs once for all K, with each model's values (or none). Refused otherwise.
    pub fn new_many(
        model: &ModelPlan,
        restrictions: &[&Restrictions],
    ) -> crate::error::Result<Self> {
        let k = restrictions.len();
        let mut c = Constraints {
            per_step: Vec::new(),
            per_epoch: Vec::new(),
        };
        for epoch in [false, true] {
            let mut by_tensor: ByTensor = Vec::new();
            for (m, r) in restrictions.iter().enumerate() {
                for (name, t) in &r.tensors {
                    let Some(p) = model.param(name) else {
                        continue; // Restrictions::validate names it
                    };
                    let list = if epoch {
                        &t.epoch_constraints
                    } else {
                        &t.constraints
                    };
                    if list.is_empty() {
                        continue;
                    }
                    let at = match by_tensor.iter().position(|(q, _)| q.name == p.name) {
                        Some(i) => i,
                        None => {
                            by_tensor.push((p.clone(), vec![Vec::new(); k]));
                            by_tensor.len() - 1
                        }
                    };
                    by_tensor[at].1[m].extend(list.iter().cloned());
                }
            }
            for (p, lists) in by_tensor {
                if !compatible(lists.iter().map(Vec::as_slice)) {
                    return Err(crate::error::Error::Config(format!(
                        "{}: models stepping together must have the same kinds of constraints on it (or none)",
                        p.name
                    )));
                }
                let n = lists.iter().map(Vec::len).max().unwrap_or(0);
                for i in 0..n {
                    let pass: Vec<Option<Constraint>> =
                        lists.iter().map(|l| l.get(i).cloned()).collect();
                    let list = if epoch {
                        &mut c.per_epoch
                    } else {
                        &mut c.per_step
                    };
                    list.push((p.clone(), pass));
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
