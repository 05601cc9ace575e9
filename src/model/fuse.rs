//! From the model plan to the ops the GPU runs, by rewrites of the layer sequence, so that no op looks
//! at its neighbours while it records:
//! - a view (flatten) is no op at all: the next op reads the same buffer;
//! - a fusion (`layers::FUSIONS`: conv2d + relu + 2x2 max-pool) replaces the layers it matches with one
//!   op, where its rule says the kernel set can run it;
//! - relu' goes to one op: a relu layer applies it to its own output gradient, unless the next op can
//!   apply it to its input gradient itself (a max-pool: the window maximum is the relu output), which
//!   saves a pass over the larger tensor;
//! - an op writes the gradient of its input only when an earlier op has weights.

use std::ops::Range;

use super::{ModelPlan, ParamSpec, Shape};
use crate::gpu::KernelSet;
use crate::layers::{Fusion, FUSIONS};

/// One op of the step: one layer, or the layers a fusion replaced.
#[derive(Clone, Debug)]
pub struct OpPlan {
    /// its layers' names joined by "+" (buffer labels, errors)
    pub name: String,
    /// the model layers it runs
    pub layers: Range<usize>,
    /// the fusion that made it, if any
    pub fusion: Option<&'static Fusion>,
    pub input: Shape,
    pub output: Shape,
    /// the parameters of its layers, in order
    pub params: Vec<ParamSpec>,
    /// the backward applies relu' (the GATE variant): of the op's own output for a relu layer, of its
    /// input for a layer that gates its input (max-pool)
    pub gate: bool,
    /// an earlier op has weights: the backward writes the gradient of the input
    pub needs_dx: bool,
    /// the elementwise activation of its layer (tanh, sigmoid, elu, leaky_relu), run as its own op after
    /// the layer's: (shaders/activation.wgsl's code, parameter)
    pub epilogue: Option<(u32, f32)>,
}

/// The ops of `plan` in the shapes of `set` (`fuse`: apply the fusions).
pub fn lower(plan: &ModelPlan, set: KernelSet, fuse: bool) -> Vec<OpPlan> {
    let layers = &plan.layers;
    let first_param = plan.first_param_layer();
    let mut ops: Vec<OpPlan> = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        if layers[i].spec.kind().is_view() {
            i += 1;
            continue;
        }
        let fused = FUSIONS
            .iter()
            .filter(|_| fuse)
            .find_map(|f| (f.matches)(plan, i, set).map(|n| (*f, n)));
        let (fusion, n) = match fused {
            Some((f, n)) => (Some(f), n),
            None => (None, 1),
        };
        let range = i..i + n;
        let names: Vec<&str> = layers[i..i + n].iter().map(|l| l.name.as_str()).collect();
        ops.push(OpPlan {
            name: names.join("+"),
            layers: range.clone(),
            fusion,
            input: layers[i].input,
            output: layers[i + n - 1].output,
            params: range
                .clone()
                .flat_map(|l| plan.layer_params(l))
                .cloned()
                .collect(),
            gate: false,
            needs_dx: i > first_param,
            epilogue: None,
        });
        if let (None, Some(e)) = (fusion, layers[i].spec.kind().epilogue()) {
            let l = &layers[i];
            ops.push(OpPlan {
                name: format!("{} activation", l.name),
                layers: i..i + 1,
                fusion: None,
                input: l.output,
                output: l.output,
                params: Vec::new(),
                gate: false,
                needs_dx: true,
                epilogue: Some(e),
            });
        }
        i += n;
    }
    // relu' ownership: a fused op handles its own; otherwise the relu layer, unless the next op (right
    // after it, no view between) gates its input
    for k in 0..ops.len() {
        if ops[k].fusion.is_some() || ops[k].epilogue.is_some() {
            continue;
        }
        let l = &layers[ops[k].layers.start];
        let kind = l.spec.kind();
        let prev_relu = k > 0
            && ops[k - 1].fusion.is_none()
            && ops[k - 1].layers.end == ops[k].layers.start
            && layers[ops[k - 1].layers.start].spec.kind().relu();
        ops[k].gate = if kind.gates_input() {
            prev_relu
        } else {
            let next_gates = ops.get(k + 1).is_some_and(|n| {
                n.fusion.is_none()
                    && n.layers.start == ops[k].layers.end
                    && layers[n.layers.start].spec.kind().gates_input()
            });
            kind.relu() && !next_gates
        };
    }
    ops
}
