//! The model: its description in Keras' vocabulary (`ModelSpec`: an input shape and a sequential stack of
//! `LayerSpec`s, the registry of layer kinds in `src/layers/`), and its plan (`ModelPlan`): per-layer
//! shapes, Keras auto-names, and the flat parameter table `{name, keras_shape, offset, len}` that the
//! optimizer, the constraints and the checkpoints address tensors by. `fuse` turns a plan into the ops
//! the GPU runs.

pub mod fuse;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::error::{Error, Result};
pub use crate::layers::LayerSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Linear,
    Relu,
    Softmax,
    Tanh,
    Sigmoid,
    Elu,
    #[serde(rename = "leaky_relu")]
    LeakyRelu,
}

impl Activation {
    /// An activation a layer applies after its own op, as a separate elementwise pass (the code and
    /// parameter of shaders/activation.wgsl; Keras' function defaults: elu's alpha 1, leaky_relu's
    /// negative slope 0.2); None: relu, linear and softmax, which the layer's op or the loss apply.
    pub fn elementwise(self) -> Option<(u32, f32)> {
        match self {
            Activation::Tanh => Some((2, 1.0)),
            Activation::Sigmoid => Some((3, 1.0)),
            Activation::Elu => Some((4, 1.0)),
            Activation::LeakyRelu => Some((5, 0.2)),
            Activation::Linear | Activation::Relu | Activation::Softmax => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    Valid,
    Same,
}

impl Padding {
    /// One axis of a sliding window as TensorFlow computes it: (output length, zeros before the input)
    /// for an input of `n`, a window of `k` and a stride of `s`; `valid`: whole windows only, `same`:
    /// ceil(n / s) outputs, the padding split with the extra row or column after (bottom, right).
    /// None: a valid window larger than its input.
    pub fn window(self, n: usize, k: usize, s: usize) -> Option<(usize, usize)> {
        match self {
            Padding::Valid => (k >= 1 && s >= 1 && k <= n).then(|| ((n - k) / s + 1, 0)),
            Padding::Same => {
                if k == 0 || s == 0 || n == 0 {
                    return None;
                }
                let out = n.div_ceil(s);
                let total = ((out - 1) * s + k).saturating_sub(n);
                Some((out, total / 2))
            }
        }
    }

    pub fn keras(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// (H, W, C), C = 1 or 3
    pub input: [usize; 3],
    pub layers: Vec<LayerSpec>,
    /// The layers' Keras names (a `.keras` file's), one per layer; empty: Keras' auto-names
    /// ("conv2d", "conv2d_1", "max_pooling2d", ...)
    pub names: Vec<String>,
}

impl ModelSpec {
    /// `layers` on an (H, W, C) input, with Keras' auto-names.
    pub fn new(input: [usize; 3], layers: Vec<LayerSpec>) -> Self {
        ModelSpec {
            input,
            layers,
            names: Vec::new(),
        }
    }

    /// Conv2D(32, 3x3, relu) -> MaxPool2D(2x2) -> Flatten -> Dense(10, softmax) on 28x28x1.
    pub fn reference() -> Self {
        use crate::layers::{Conv2d, Dense, Flatten, MaxPool2d};
        ModelSpec {
            input: [28, 28, 1],
            layers: vec![
                Conv2d::new(32, 3, Padding::Valid, Activation::Relu).into(),
                MaxPool2d::new(2).into(),
                Flatten::new().into(),
                Dense::new(10, Activation::Softmax).into(),
            ],
            names: Vec::new(),
        }
    }
}

/// Shape of an activation: spatial NHWC (without N) or flat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Spatial { h: usize, w: usize, c: usize },
    Flat(usize),
}

impl Shape {
    pub fn len(&self) -> usize {
        match *self {
            Shape::Spatial { h, w, c } => h * w * c,
            Shape::Flat(n) => n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Kernel,
    Bias,
    /// BatchNormalization's gamma
    Scale,
    /// BatchNormalization's beta
    Shift,
    /// BatchNormalization's moving mean and variance (not trainable)
    Statistic,
}

/// How a tensor starts (Keras' initializers, the defaults of the layers clampnet has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// uniform in ±sqrt(6 / (fan_in + fan_out))
    GlorotUniform {
        fan_in: usize,
        fan_out: usize,
    },
    Zeros,
    Ones,
}

/// A parameter a layer declares: the suffix of its Keras name ("kernel"), its shape, how it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub suffix: &'static str,
    pub role: Role,
    /// Keras layout: conv (kh, kw, in, out), dense (in, out), bias (out,)
    pub shape: Vec<usize>,
    pub init: Init,
    /// updated by the optimizer (false: state that only checkpoints keep)
    pub trainable: bool,
}

/// One tensor of the flat parameter memory.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Keras name: "conv2d.kernel", "dense_1.bias", ...
    pub name: String,
    pub layer: usize,
    pub role: Role,
    /// Keras layout: conv (kh, kw, in, out), dense (in, out), bias (out,)
    pub shape: Vec<usize>,
    /// element offset in the flat buffers (64-element = 256-byte aligned, so spans bind directly)
    pub offset: usize,
    pub len: usize,
    pub init: Init,
    pub trainable: bool,
}

#[derive(Clone, Debug)]
pub struct LayerPlan {
    pub spec: LayerSpec,
    /// its position in the model
    pub index: usize,
    /// Keras name: the file's, or Keras' auto-name ("conv2d", "conv2d_1", "max_pooling2d", ...)
    pub name: String,
    pub input: Shape,
    pub output: Shape,
    /// indices into `ModelPlan::params`, in the layer's weight order (kernel, bias)
    pub params: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct ModelPlan {
    pub spec: ModelSpec,
    pub layers: Vec<LayerPlan>,
    pub params: Vec<ParamSpec>,
    /// total elements of the flat parameter buffers (padding included)
    pub flat_len: usize,
    /// the last layer's units: the classes the loss reads its logits for (0: not a classifier)
    pub classes: usize,
    /// the last layer applies softmax (else it outputs logits: a loss with from_logits)
    pub softmax: bool,
}

pub const PARAM_ALIGN: usize = 64;

/// Largest activation or tensor the shaders index (u32).
pub const MAX_VALUES: usize = u32::MAX as usize;

impl ModelPlan {
    /// The plan of a whole model: its layers, and a last layer that is a softmax over the classes.
    pub fn new(spec: &ModelSpec) -> Result<Self> {
        let plan = Self::partial(spec)?;
        let [h, w, c] = spec.input;
        if c != 1 && c != 3 {
            return Err(Error::Model(format!(
                "input channels must be 1 (grayscale) or 3 (RGB), got {c} (input {h}x{w}x{c})"
            )));
        }
        if plan.classes == 0 {
            return Err(Error::Model(
                "the last layer must be dense with activation 'softmax' (or 'linear', with a loss from_logits = true)".into(),
            ));
        }
        if plan.classes < 2 {
            return Err(Error::Model(
                "the last dense layer needs at least 2 units (classes)".into(),
            ));
        }
        Ok(plan)
    }

    /// The plan of a stack of layers over an input of any channel count, that need not end in the softmax
    /// a model ends in (`classes` 0 then): the layers' shapes and parameters, checked. The conformance
    /// tests run single ops of one.
    pub fn partial(spec: &ModelSpec) -> Result<Self> {
        let [h, w, c] = spec.input;
        let fits = h
            .checked_mul(w)
            .and_then(|hw| hw.checked_mul(c))
            .is_some_and(|n| n <= MAX_VALUES);
        if !fits {
            return Err(Error::Model(format!(
                "input {h}x{w}x{c} is too large: at most {} values per image",
                u32::MAX
            )));
        }
        if h == 0 || w == 0 {
            return Err(Error::Model(format!(
                "input must be at least 1x1, got {h}x{w}x{c}"
            )));
        }
        if spec.layers.is_empty() {
            return Err(Error::Model("the model has no layers".into()));
        }
        if !spec.names.is_empty() {
            if spec.names.len() != spec.layers.len() {
                return Err(Error::Model(format!(
                    "{} layer names for {} layers",
                    spec.names.len(),
                    spec.layers.len()
                )));
            }
            for (i, n) in spec.names.iter().enumerate() {
                if n.is_empty() || n.contains(['/', '.']) {
                    return Err(Error::Model(format!(
                        "layer {i}: the name {n:?} cannot name tensors: use letters, digits and '_'"
                    )));
                }
                if spec.names[..i].contains(n) {
                    return Err(Error::Model(format!(
                        "two layers are named {n:?}: Keras layer names are unique"
                    )));
                }
            }
        }
        let mut shape = Shape::Spatial { h, w, c };
        let mut layers = Vec::new();
        let mut params = Vec::new();
        let mut counts: std::collections::HashMap<&str, usize> = Default::default();
        let mut offset = 0usize;
        let last = spec.layers.len() - 1;
        for (i, layer) in spec.layers.iter().enumerate() {
            let kind = layer.kind();
            let base = kind.keras_name();
            let count = counts.entry(base).or_insert(0);
            let name = if let Some(n) = spec.names.get(i) {
                n.clone()
            } else if *count == 0 {
                base.to_string()
            } else {
                format!("{base}_{count}")
            };
            *count += 1;
            let output = kind
                .output(shape, i == last)
                .map_err(|what| Error::Model(format!("layer {i} ({name}): {what}")))?;
            let mut indices = Vec::new();
            for d in kind.params(shape) {
                let len: usize = d.shape.iter().product();
                params.push(ParamSpec {
                    name: format!("{name}.{}", d.suffix),
                    layer: i,
                    role: d.role,
                    shape: d.shape,
                    offset,
                    len,
                    init: d.init,
                    trainable: d.trainable,
                });
                offset += len.div_ceil(PARAM_ALIGN) * PARAM_ALIGN;
                indices.push(params.len() - 1);
            }
            layers.push(LayerPlan {
                spec: layer.clone(),
                index: i,
                name,
                input: shape,
                output,
                params: indices,
            });
            shape = output;
        }
        let last_kind = spec.layers[last].kind();
        let classes = if last_kind.logits_output() {
            shape.len()
        } else {
            0
        };
        let softmax = last_kind.softmax_output();
        Ok(ModelPlan {
            spec: spec.clone(),
            layers,
            params,
            flat_len: offset,
            classes,
            softmax,
        })
    }

    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    pub fn param_count(&self) -> usize {
        self.params.iter().map(|p| p.len).sum()
    }

    pub fn input_len(&self) -> usize {
        let [h, w, c] = self.spec.input;
        h * w * c
    }

    /// The first layer with parameters: the backward writes input gradients only past it.
    pub fn first_param_layer(&self) -> usize {
        self.layers
            .iter()
            .position(|l| !l.params.is_empty())
            .unwrap_or(0)
    }

    /// Floating-point operations (multiply and add counted as 2) of one training step per image:
    /// forward, weight and bias gradients, and input gradients where an earlier layer has weights.
    pub fn train_flops_per_image(&self) -> f64 {
        let first = self.first_param_layer();
        let mut flops = 0.0;
        for (i, l) in self.layers.iter().enumerate() {
            let macs = l.spec.kind().macs(l.input, l.output);
            let passes = if i > first { 3.0 } else { 2.0 };
            flops += 2.0 * macs * passes;
        }
        flops
    }

    /// The parameters of layer `i`, in its weight order.
    pub fn layer_params(&self, i: usize) -> Vec<&ParamSpec> {
        self.layers[i]
            .params
            .iter()
            .map(|&p| &self.params[p])
            .collect()
    }
}

/// The initial weights: each tensor's initializer, in the parameter order, from one seeded ChaCha8
/// stream (Keras' glorot-uniform kernels and zero biases).
pub fn init_weights(model: &ModelPlan, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    model
        .params
        .iter()
        .map(|p| match p.init {
            Init::Zeros => vec![0.0; p.len],
            Init::Ones => vec![1.0; p.len],
            Init::GlorotUniform { fan_in, fan_out } => {
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                (0..p.len)
                    .map(|_| rng.random_range(-limit..limit))
                    .collect()
            }
        })
        .collect()
}
