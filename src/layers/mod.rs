//! Layer kinds. Each kind is one file holding everything about it: its Keras settings (the config's
//! `[[model.layers]]` table), shapes, parameter declarations (Keras name, shape, initializer), cost, the
//! glue to its CPU twin (`src/reference/`), and its GPU op: uniform struct, kernels, grids, buffers and
//! forward and backward recording. Its WGSL is under `shaders/`.
//!
//! Adding a layer kind: its file here, its shader, and one line in `registry!` below (which declares
//! the module too). A fusion (several layers run as one op) is a file, its `mod` line and one line in
//! `FUSIONS`.

pub mod conv2d_pool;
pub mod pool;

use serde::Deserialize;

use crate::config::{ConstraintConfig, RegularizerConfig};
use crate::error::{Error, Result};
use crate::gpu::{Buffer, Context, KernelDef, KernelSet, Recorder};
use crate::model::fuse::OpPlan;
use crate::model::{LayerPlan, ModelPlan, ParamDecl, Shape};

/// The registry: one line per layer kind, `Variant(module::Type)` (the module is this folder's file of
/// that name), with the serde attributes of its `type = "..."` name in a config (snake_case of the
/// variant by default).
macro_rules! registry {
    ($( $(#[$attr:meta])* $variant:ident($module:ident::$ty:ident) ),* $(,)?) => {
        $( pub mod $module; pub use $module::$ty; )*

        /// One layer of a sequential model, as a config's `[[model.layers]]` table describes it.
        #[derive(Clone, Debug, PartialEq, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum LayerSpec {
            $( $(#[$attr])* $variant($module::$ty), )*
        }

        impl LayerSpec {
            /// What the layer kind knows about itself.
            pub fn kind(&self) -> &dyn Layer {
                match self { $( LayerSpec::$variant(l) => l, )* }
            }

            pub fn kind_mut(&mut self) -> &mut dyn Layer {
                match self { $( LayerSpec::$variant(l) => l, )* }
            }
        }

        impl LayerSpec {
        /// The layer kind whose Keras class is `class`, read from its config; None: no kind has that class.
        pub fn from_keras(
            class: &str,
            c: &crate::keras::LayerConfig,
        ) -> Option<std::result::Result<LayerSpec, String>> {
            use crate::keras::FromKeras;
            $( if class == <$module::$ty as FromKeras>::CLASS
                || <$module::$ty as FromKeras>::ALSO.contains(&class)
            {
                return Some(<$module::$ty as FromKeras>::from_keras(c).map(LayerSpec::$variant));
            } )*
            None
        }

        /// The Keras classes clampnet trains.
        pub fn keras_classes() -> Vec<&'static str> {
            use crate::keras::FromKeras;
            let mut v = Vec::new();
            $(
                v.push(<$module::$ty as FromKeras>::CLASS);
                v.extend_from_slice(<$module::$ty as FromKeras>::ALSO);
            )*
            v
        }
        }

        $( impl From<$module::$ty> for LayerSpec {
            fn from(l: $module::$ty) -> Self {
                LayerSpec::$variant(l)
            }
        } )*

        /// The kernels every layer kind and fusion dispatches.
        pub fn kernels() -> Vec<&'static KernelDef> {
            let mut k: Vec<&'static KernelDef> = Vec::new();
            $( k.extend_from_slice($module::KERNELS); )*
            for f in FUSIONS {
                k.extend_from_slice(f.kernels);
            }
            k
        }
    };
}

registry! {
    Conv2d(conv2d::Conv2d),
    #[serde(rename = "max_pool2d", alias = "max_pooling2d")]
    MaxPool2d(max_pool::MaxPool2d),
    AveragePooling2d(avg_pool::AveragePooling2d),
    GlobalAveragePooling2d(global_avg_pool::GlobalAveragePooling2d),
    GlobalMaxPooling2d(global_max_pool::GlobalMaxPooling2d),
    Flatten(flatten::Flatten),
    Dense(dense::Dense),
    Dropout(dropout::Dropout),
    BatchNormalization(batch_norm::BatchNormalization),
    Activation(activation::ActivationLayer),
}

/// Several layers run as one op: `matches` says where, `build` makes the op. The op's CPU twin is the
/// chain of its layers' twins.
pub struct Fusion {
    pub name: &'static str,
    /// the number of layers from layer `i` this fusion runs as one op, where it applies there
    pub matches: fn(&ModelPlan, usize, KernelSet) -> Option<usize>,
    pub build: fn(&ModelPlan, &OpPlan, &Build) -> Result<Box<dyn Op>>,
    pub kernels: &'static [&'static KernelDef],
}

impl std::fmt::Debug for Fusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The fusions, tried in order at each layer.
pub static FUSIONS: &[&Fusion] = &[&conv2d_pool::FUSION];

/// The restriction settings of one parameter in a layer's config: Keras' `<param>_regularizer` and
/// `<param>_constraint`.
pub type ParamRestriction = (
    &'static str,
    Option<RegularizerConfig>,
    Option<ConstraintConfig>,
);

/// The restriction settings of a layer with a kernel and a bias, Keras' `kernel_regularizer`,
/// `kernel_constraint`, `bias_regularizer` and `bias_constraint`, taken out of it.
pub(crate) fn kernel_and_bias(
    (kernel_regularizer, kernel_constraint): (
        &mut Option<RegularizerConfig>,
        &mut Option<ConstraintConfig>,
    ),
    (bias_regularizer, bias_constraint): (
        &mut Option<RegularizerConfig>,
        &mut Option<ConstraintConfig>,
    ),
) -> Vec<ParamRestriction> {
    vec![
        (
            "kernel",
            kernel_regularizer.take(),
            kernel_constraint.take(),
        ),
        ("bias", bias_regularizer.take(), bias_constraint.take()),
    ]
}

/// What a layer kind knows about itself (no GPU here but `op`).
pub trait Layer {
    /// The base of Keras' auto-names: "conv2d" -> conv2d, conv2d_1, ...
    fn keras_name(&self) -> &'static str;

    /// Keras' class name ("Conv2D"); reading a Keras config is the kind's `keras::FromKeras`.
    fn keras_class(&self) -> &'static str;

    /// The layer's Keras config under the name `name`, without its restrictions (`keras::export` adds
    /// each parameter's `<suffix>_regularizer` and `<suffix>_constraint`).
    fn keras_config(&self, name: &str) -> serde_json::Map<String, serde_json::Value>;

    /// The output shape for `input`, or what is wrong (`last`: the model's last layer).
    fn output(&self, input: Shape, last: bool) -> std::result::Result<Shape, String>;

    /// The parameters, in Keras' weight order.
    fn params(&self, _input: Shape) -> Vec<ParamDecl> {
        Vec::new()
    }

    /// Multiply-adds per image of the forward pass.
    fn macs(&self, _input: Shape, _output: Shape) -> f64 {
        0.0
    }

    /// The units of the softmax this layer ends with (the model's classes), if it ends with one.
    fn softmax_units(&self) -> Option<usize> {
        None
    }

    /// Ending a model, its output is the logits the loss reads (a dense layer with softmax, whose
    /// logits the loss reads, or linear, for a loss with from_logits; a softmax layer, a view)
    fn logits_output(&self) -> bool {
        self.softmax_units().is_some()
    }

    /// Ending a model, it applies softmax (else its output is logits: a loss with from_logits).
    fn softmax_output(&self) -> bool {
        self.softmax_units().is_some()
    }

    /// The elementwise activation that runs after this layer's op (`model::Activation::elementwise`).
    fn epilogue(&self) -> Option<(u32, f32)> {
        None
    }

    /// Its output is a relu's.
    fn relu(&self) -> bool {
        false
    }

    /// Its backward can apply relu' of the relu layer right before it (`model::fuse`).
    fn gates_input(&self) -> bool {
        false
    }

    /// Its output is its input, reshaped: no op runs for it.
    fn is_view(&self) -> bool {
        false
    }

    /// The config's restriction settings, per parameter suffix, taken out of the layer (`Config::parse`
    /// resolves them into `Restrictions`).
    fn take_restrictions(&mut self) -> Vec<ParamRestriction> {
        Vec::new()
    }

    /// The CPU twin of the forward pass over `batch` examples: the output (and a pool's choices).
    fn twin_forward(&self, l: &LayerPlan, batch: usize, x: &[f64], w: &[&[f64]]) -> TwinForward;

    /// The CPU twin of the forward pass in training, at optimizer step `step` (0-based: the optimizer's
    /// `iterations`) of a run seeded `seed`; only layers whose training forward differs from inference
    /// (dropout) override it.
    fn twin_forward_train(
        &self,
        l: &LayerPlan,
        batch: usize,
        x: &[f64],
        w: &[&[f64]],
        (_step, _seed): (u64, u64),
    ) -> TwinForward {
        self.twin_forward(l, batch, x, w)
    }

    /// The CPU twin of the backward pass: the parameter gradients (weight order) and dL/dx.
    fn twin_backward(
        &self,
        l: &LayerPlan,
        batch: usize,
        x: &[f64],
        w: &[&[f64]],
        fwd: &TwinForward,
        dy: &[f64],
    ) -> (Vec<Vec<f64>>, Vec<f64>);

    /// The GPU op of this layer alone.
    fn op(&self, plan: &OpPlan, _b: &Build) -> Result<Box<dyn Op>> {
        Err(Error::Model(format!("{}: no GPU op", plan.name)))
    }
}

/// What a twin forward pass produces.
#[derive(Clone, Debug, Default)]
pub struct TwinForward {
    pub y: Vec<f64>,
    /// a max-pool's choice per output element
    pub argmax: Option<Vec<u32>>,
    /// a dropout's mask (training)
    pub keep: Option<Vec<bool>>,
    /// a training forward's new values of the layer's non-trainable tensors, in its weight order
    /// (BatchNormalization's moving statistics)
    pub state: Option<Vec<Vec<f64>>>,
}

/// What building an op needs.
pub struct Build<'a> {
    pub ctx: &'a Context,
    pub set: KernelSet,
    /// rows of a full batch: buffers are sized for it
    pub batch: usize,
    /// allocate gradient buffers (false: a forward-only predictor)
    pub training: bool,
    /// the run's seed (dropout masks); per model, for K models stepping together
    pub seeds: Vec<u64>,
}

impl Build<'_> {
    /// An op's output `[batch, len]` f32 and, when training, its gradient (`dy_window`: also readable
    /// through a uniform window).
    pub fn outputs(&self, plan: &OpPlan, dy_window: bool) -> Result<OpOutput> {
        let bytes = (self.batch * plan.output.len() * 4) as u64;
        let label = |what: &str| format!("{} {what}", plan.name);
        let y = self.ctx.storage_checked(&label("output"), bytes)?;
        let dy = match (self.training, dy_window) {
            (false, _) => None,
            (true, false) => Some(self.ctx.storage_checked(&label("output gradient"), bytes)?),
            (true, true) => Some(
                self.ctx
                    .storage_uniform_checked(&label("output gradient"), bytes)?,
            ),
        };
        Ok(OpOutput { y, dy })
    }
}

/// What an op writes for the next one: its output, and (training) the gradient of that output, which
/// the next op's backward (or the loss) writes and its own backward reads.
pub struct OpOutput {
    /// `[batch, output]`
    pub y: Buffer,
    /// dL/dy, `[batch, output]` (None in a forward-only op)
    pub dy: Option<Buffer>,
}

impl OpOutput {
    /// dL/dy, which a training op has.
    pub fn dy(&self) -> &Buffer {
        self.dy
            .as_ref()
            .expect("a training op has an output gradient")
    }
}

/// The buffers an op reads and writes besides its own.
pub struct Io<'a> {
    /// its input, `[rows, input]`
    pub x: &'a Buffer,
    /// where its backward writes dL/dx (None: no earlier op needs it)
    pub dx: Option<&'a Buffer>,
    /// the flat parameters
    pub params: &'a Buffer,
    /// the flat gradients (training only)
    pub grads: Option<&'a Buffer>,
    /// a training step's step state (`step`: optimizer steps done); None: inference, where dropout is
    /// the identity
    pub state: Option<&'a Buffer>,
}

impl<'a> Io<'a> {
    pub fn grads(&self) -> &'a Buffer {
        self.grads.expect("a training step binds the gradients")
    }
}

/// One op of a step on the GPU: it owns its output, its output's gradient and its scratch buffers, and
/// records its passes over `rows` examples (the last batch of an epoch may be short).
pub trait Op: Send + Sync {
    /// Its output and the output's gradient.
    fn out(&self) -> &OpOutput;

    fn forward(&self, r: &mut Recorder, io: &Io, rows: usize);

    /// As the model's last op in a fused step: its forward with the loss (`step::loss`'s softmax
    /// cross-entropy, into `loss.per_example` and its own output gradient) done by its last kernel.
    /// Returns false, having recorded nothing, where it cannot: the step then records `forward` and the
    /// loss kernel.
    fn forward_with_loss(&self, _r: &mut Recorder, _io: &Io, _rows: usize, _loss: &LossIo) -> bool {
        false
    }

    /// Parameter gradients into `io.grads`, and dL/dx into `io.dx` where given.
    fn backward(&self, r: &mut Recorder, io: &Io, rows: usize);
}

/// What a last op's loss-fused forward binds besides its own buffers (`Op::forward_with_loss`).
pub struct LossIo<'a> {
    /// the loss uniform (`step::loss::LossParams`)
    pub params: &'a Buffer,
    /// the batch's labels, [rows]
    pub labels: &'a Buffer,
    /// Keras' class_weight, [classes]
    pub class_weights: &'a Buffer,
    /// each example's cross-entropy and correctness, [rows, 2]
    pub per_example: &'a Buffer,
    pub classes: usize,
}

/// Build the op of `plan`.
pub fn build_op(model: &ModelPlan, plan: &OpPlan, b: &Build) -> Result<Box<dyn Op>> {
    if let Some((code, alpha)) = plan.epilogue {
        return activation::elementwise_op(plan, b, code, alpha);
    }
    match plan.fusion {
        Some(f) => (f.build)(model, plan, b),
        None => model.layers[plan.layers.start].spec.kind().op(plan, b),
    }
}

/// The dims of a spatial shape; layers that need one check it in `output` first.
pub(crate) fn spatial(s: Shape) -> (usize, usize, usize) {
    match s {
        Shape::Spatial { h, w, c } => (h, w, c),
        Shape::Flat(_) => unreachable!("checked by the layer's `output`: a spatial shape"),
    }
}
