//! Model description (a sequential stack, Keras vocabulary) and its plan: per-layer shapes, Keras
//! auto-names, and the flat parameter table `{name, keras_shape, offset, len}` that the optimizer,
//! the constraints and the checkpoints address tensors by.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Linear,
    Relu,
    Softmax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    Valid,
    Same,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv2d {
        filters: usize,
        kernel_size: usize,
        padding: Padding,
        activation: Activation,
    },
    MaxPool2d {
        pool_size: usize,
    },
    Flatten,
    Dense {
        units: usize,
        activation: Activation,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// (H, W, C), C = 1 or 3
    pub input: [usize; 3],
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// Conv2D(32, 3x3, relu) -> MaxPool2D(2x2) -> Flatten -> Dense(10, softmax) on 28x28x1.
    pub fn reference() -> Self {
        ModelSpec {
            input: [28, 28, 1],
            layers: vec![
                LayerSpec::Conv2d {
                    filters: 32,
                    kernel_size: 3,
                    padding: Padding::Valid,
                    activation: Activation::Relu,
                },
                LayerSpec::MaxPool2d { pool_size: 2 },
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    units: 10,
                    activation: Activation::Softmax,
                },
            ],
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
}

#[derive(Clone, Debug)]
pub struct LayerPlan {
    pub spec: LayerSpec,
    /// Keras auto-name ("conv2d", "conv2d_1", "max_pooling2d", "flatten", "dense", ...)
    pub name: String,
    pub input: Shape,
    pub output: Shape,
    /// indices into `ModelPlan::params` (kernel, bias) for layers with weights
    pub params: Option<(usize, usize)>,
}

#[derive(Clone, Debug)]
pub struct ModelPlan {
    pub spec: ModelSpec,
    pub layers: Vec<LayerPlan>,
    pub params: Vec<ParamSpec>,
    /// total elements of the flat parameter buffers (padding included)
    pub flat_len: usize,
    pub classes: usize,
}

pub const PARAM_ALIGN: usize = 64;

impl ModelPlan {
    pub fn new(spec: &ModelSpec) -> Result<Self> {
        let [h, w, c] = spec.input;
        // the shaders index with u32: every activation and tensor must fit, checked without overflow
        let fits = |n: Option<usize>| n.filter(|&n| n <= u32::MAX as usize);
        if fits(h.checked_mul(w).and_then(|hw| hw.checked_mul(c))).is_none() {
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
        if c != 1 && c != 3 {
            return Err(Error::Model(format!(
                "input channels must be 1 (grayscale) or 3 (RGB), got {c}"
            )));
        }
        if spec.layers.is_empty() {
            return Err(Error::Model("the model has no layers".into()));
        }
        let mut shape = Shape::Spatial { h, w, c };
        let mut layers = Vec::new();
        let mut params = Vec::new();
        let mut counts: std::collections::HashMap<&str, usize> = Default::default();
        let mut offset = 0usize;
        let mut add_param = |params: &mut Vec<ParamSpec>,
                             name: String,
                             layer: usize,
                             role: Role,
                             shape: Vec<usize>| {
            let len: usize = shape.iter().product();
            params.push(ParamSpec {
                name,
                layer,
                role,
                shape,
                offset,
                len,
            });
            offset += len.div_ceil(PARAM_ALIGN) * PARAM_ALIGN;
            params.len() - 1
        };
        let last = spec.layers.len() - 1;
        for (i, layer) in spec.layers.iter().enumerate() {
            let base = match layer {
                LayerSpec::Conv2d { .. } => "conv2d",
                LayerSpec::MaxPool2d { .. } => "max_pooling2d",
                LayerSpec::Flatten => "flatten",
                LayerSpec::Dense { .. } => "dense",
            };
            let count = counts.entry(base).or_insert(0);
            let name = if *count == 0 {
                base.to_string()
            } else {
                format!("{base}_{count}")
            };
            *count += 1;
            let at = |what: &str| format!("layer {i} ({name}): {what}");
            let too_large = |what: &str| {
                Error::Model(at(&format!(
                    "{what} is too large: at most {} values",
                    u32::MAX
                )))
            };
            let sizes_ok = match layer {
                LayerSpec::Conv2d {
                    filters,
                    kernel_size,
                    ..
                } => {
                    let (h, w) = match shape {
                        Shape::Spatial { h, w, .. } => (h, w),
                        Shape::Flat(_) => (1, 1),
                    };
                    fits(
                        kernel_size
                            .checked_mul(*kernel_size)
                            .and_then(|k| k.checked_mul(shape.len()))
                            .and_then(|k| k.checked_mul(*filters)),
                    )
                    .is_some()
                        && fits(h.checked_mul(w).and_then(|hw| hw.checked_mul(*filters))).is_some()
                }
                LayerSpec::Dense { units, .. } => fits(shape.len().checked_mul(*units)).is_some(),
                _ => true,
            };
            if !sizes_ok {
                return Err(too_large("its kernel or output"));
            }
            let (output, p) = match (layer, shape) {
                (
                    LayerSpec::Conv2d {
                        filters,
                        kernel_size,
                        padding,
                        activation,
                    },
                    Shape::Spatial { h, w, c },
                ) => {
                    if *filters == 0 || *kernel_size == 0 {
                        return Err(Error::Model(at(
                            "filters and kernel_size must be at least 1",
                        )));
                    }
                    if *activation == Activation::Softmax {
                        return Err(Error::Model(at("conv2d activation must be relu or linear")));
                    }
                    let k = *kernel_size;
                    let (oh, ow) = match padding {
                        Padding::Valid => {
                            if k > h || k > w {
                                return Err(Error::Model(at(&format!(
                                    "kernel {k}x{k} is larger than its {h}x{w} input"
                                ))));
                            }
                            (h - k + 1, w - k + 1)
                        }
                        Padding::Same => {
                            if k % 2 == 0 {
                                return Err(Error::Model(at(
                                    "padding 'same' needs an odd kernel_size",
                                )));
                            }
                            (h, w)
                        }
                    };
                    let kern = add_param(
                        &mut params,
                        format!("{name}.kernel"),
                        i,
                        Role::Kernel,
                        vec![k, k, c, *filters],
                    );
                    let bias = add_param(
                        &mut params,
                        format!("{name}.bias"),
                        i,
                        Role::Bias,
                        vec![*filters],
                    );
                    (
                        Shape::Spatial {
                            h: oh,
                            w: ow,
                            c: *filters,
                        },
                        Some((kern, bias)),
                    )
                }
                (LayerSpec::MaxPool2d { pool_size }, Shape::Spatial { h, w, c }) => {
                    let k = *pool_size;
                    if k == 0 || k > h || k > w {
                        return Err(Error::Model(at(&format!(
                            "pool_size {k} does not fit its {h}x{w} input"
                        ))));
                    }
                    (
                        Shape::Spatial {
                            h: h / k,
                            w: w / k,
                            c,
                        },
                        None,
                    )
                }
                (LayerSpec::Flatten, s) => (Shape::Flat(s.len()), None),
                (LayerSpec::Dense { units, activation }, Shape::Flat(n)) => {
                    if *units == 0 {
                        return Err(Error::Model(at("units must be at least 1")));
                    }
                    if *activation == Activation::Softmax && i != last {
                        return Err(Error::Model(at(
                            "softmax is only supported on the last layer",
                        )));
                    }
                    let kern = add_param(
                        &mut params,
                        format!("{name}.kernel"),
                        i,
                        Role::Kernel,
                        vec![n, *units],
                    );
                    let bias = add_param(
                        &mut params,
                        format!("{name}.bias"),
                        i,
                        Role::Bias,
                        vec![*units],
                    );
                    (Shape::Flat(*units), Some((kern, bias)))
                }
                (LayerSpec::Dense { .. }, Shape::Spatial { .. }) => {
                    return Err(Error::Model(at(
                        "dense needs a flat input: add a flatten layer before it",
                    )))
                }
                (_, Shape::Flat(_)) => {
                    return Err(Error::Model(at(
                        "conv2d and max_pool2d need a spatial input, but the input is already flat",
                    )))
                }
            };
            layers.push(LayerPlan {
                spec: layer.clone(),
                name,
                input: shape,
                output,
                params: p,
            });
            shape = output;
        }
        let classes = match spec.layers[last] {
            LayerSpec::Dense { units, activation: Activation::Softmax } => units,
            _ => {
                return Err(Error::Model(
                    "the last layer must be dense with activation 'softmax' (the loss is sparse categorical cross-entropy)".into(),
                ))
            }
        };
        if classes < 2 {
            return Err(Error::Model(
                "the softmax layer needs at least 2 units".into(),
            ));
        }
        Ok(ModelPlan {
            spec: spec.clone(),
            layers,
            params,
            flat_len: offset,
            classes,
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

    /// Floating-point operations (multiply and add counted as 2) of one training step per image:
    /// forward, weight and bias gradients, and input gradients where an earlier layer has weights.
    pub fn train_flops_per_image(&self) -> f64 {
        let first = self
            .layers
            .iter()
            .position(|l| l.params.is_some())
            .unwrap_or(0);
        let mut flops = 0.0;
        for (i, l) in self.layers.iter().enumerate() {
            let macs = match (&l.spec, l.input, l.output) {
                (LayerSpec::Conv2d { kernel_size, .. }, Shape::Spatial { c, .. }, out) => {
                    (out.len() * kernel_size * kernel_size * c) as f64
                }
                (LayerSpec::Dense { .. }, input, out) => (input.len() * out.len()) as f64,
                _ => 0.0,
            };
            let passes = if i > first { 3.0 } else { 2.0 };
            flops += 2.0 * macs * passes;
        }
        flops
    }

    /// Keras' glorot-uniform fans for a kernel: conv fan_in = kh*kw*in, fan_out = kh*kw*out.
    pub fn fans(p: &ParamSpec) -> (usize, usize) {
        match p.shape.as_slice() {
            [kh, kw, cin, cout] => (kh * kw * cin, kh * kw * cout),
            [fin, fout] => (*fin, *fout),
            [n] => (*n, *n),
            _ => (1, 1),
        }
    }
}
