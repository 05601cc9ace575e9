//! The kernel table: every compute entry point clampnet dispatches, with the WGSL file that holds it.
//! Pipelines are built from this table once, at start-up (see `Pipelines`).

/// WGSL sources, embedded at build time so the binary runs from anywhere.
pub const SHADERS: &[(&str, &str)] = &[
    ("gather.wgsl", include_str!("../../shaders/gather.wgsl")),
    ("conv2d.wgsl", include_str!("../../shaders/conv2d.wgsl")),
    ("pool.wgsl", include_str!("../../shaders/pool.wgsl")),
    ("dense.wgsl", include_str!("../../shaders/dense.wgsl")),
    ("loss.wgsl", include_str!("../../shaders/loss.wgsl")),
    (
        "optimizer.wgsl",
        include_str!("../../shaders/optimizer.wgsl"),
    ),
    (
        "constraints.wgsl",
        include_str!("../../shaders/constraints.wgsl"),
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    GatherBatch,
    Conv2dForward,
    Conv2dWeightPartials,
    Conv2dWeightReduce,
    Conv2dBackwardInput,
    Conv2dReluMaxPool2Forward,
    Conv2dWeightPartialsPooled,
    Conv2dBackwardInputPooled,
    MaxPoolForward,
    MaxPoolBackward,
    DenseForward,
    DenseForwardReduce,
    DenseBackwardWeight,
    DenseBackwardBias,
    DenseBackwardInput,
    /// adds the outputs past the first 16 to DenseBackwardInput's sums (only when OUT > 16)
    DenseBackwardInputRest,
    /// the dense backward kernels reading dy through a uniform window (DY_UNIFORM)
    DenseBackwardWeightDyUniform,
    DenseBackwardBiasDyUniform,
    DenseBackwardInputDyUniform,
    DenseBackwardInputRestDyUniform,
    /// GPU shapes (`KernelSet::Gpu`): the fused conv forward, its weight gradient and reduce
    Conv2dReluMaxPool2ForwardGpu,
    Conv2dWeightPartialsPooledGpu,
    Conv2dWeightReduceGpu,
    /// GPU shapes of the dense layer: forward (with bias and activation, no reduce pass), the weight
    /// gradient with the bias gradient as its last row, the input gradient
    DenseForwardGpu,
    DenseBackwardWeightGpu,
    DenseBackwardInputGpu,
    SoftmaxXent,
    Accumulate,
    RegularizationLoss,
    GradientSumsq,
    AdamUpdate,
    ClipByValue,
    NormConstraint,
}

impl Kernel {
    pub const ALL: [Kernel; 33] = [
        Kernel::GatherBatch,
        Kernel::Conv2dForward,
        Kernel::Conv2dWeightPartials,
        Kernel::Conv2dWeightReduce,
        Kernel::Conv2dBackwardInput,
        Kernel::Conv2dReluMaxPool2Forward,
        Kernel::Conv2dWeightPartialsPooled,
        Kernel::Conv2dBackwardInputPooled,
        Kernel::MaxPoolForward,
        Kernel::MaxPoolBackward,
        Kernel::DenseForward,
        Kernel::DenseForwardReduce,
        Kernel::DenseBackwardWeight,
        Kernel::DenseBackwardBias,
        Kernel::DenseBackwardInput,
        Kernel::DenseBackwardInputRest,
        Kernel::DenseBackwardWeightDyUniform,
        Kernel::DenseBackwardBiasDyUniform,
        Kernel::DenseBackwardInputDyUniform,
        Kernel::DenseBackwardInputRestDyUniform,
        Kernel::Conv2dReluMaxPool2ForwardGpu,
        Kernel::Conv2dWeightPartialsPooledGpu,
        Kernel::Conv2dWeightReduceGpu,
        Kernel::DenseForwardGpu,
        Kernel::DenseBackwardWeightGpu,
        Kernel::DenseBackwardInputGpu,
        Kernel::SoftmaxXent,
        Kernel::Accumulate,
        Kernel::RegularizationLoss,
        Kernel::GradientSumsq,
        Kernel::AdamUpdate,
        Kernel::ClipByValue,
        Kernel::NormConstraint,
    ];

    /// (shader file, entry point, invocations per workgroup)
    pub fn source(self) -> (&'static str, &'static str) {
        use Kernel::*;
        match self {
            GatherBatch => ("gather.wgsl", "gather_batch"),
            Conv2dForward => ("conv2d.wgsl", "conv2d_forward"),
            Conv2dWeightPartials => ("conv2d.wgsl", "conv2d_weight_partials"),
            Conv2dWeightReduce => ("conv2d.wgsl", "conv2d_weight_reduce"),
            Conv2dBackwardInput => ("conv2d.wgsl", "conv2d_backward_input"),
            Conv2dReluMaxPool2Forward => ("conv2d.wgsl", "conv2d_relu_maxpool2_forward"),
            Conv2dWeightPartialsPooled => ("conv2d.wgsl", "conv2d_weight_partials_pooled"),
            Conv2dBackwardInputPooled => ("conv2d.wgsl", "conv2d_backward_input"),
            MaxPoolForward => ("pool.wgsl", "maxpool_forward"),
            MaxPoolBackward => ("pool.wgsl", "maxpool_backward"),
            DenseForward => ("dense.wgsl", "dense_forward"),
            DenseForwardReduce => ("dense.wgsl", "dense_forward_reduce"),
            DenseBackwardWeight => ("dense.wgsl", "dense_backward_weight"),
            DenseBackwardBias => ("dense.wgsl", "dense_backward_bias"),
            DenseBackwardInput => ("dense.wgsl", "dense_backward_input"),
            DenseBackwardInputRest => ("dense.wgsl", "dense_backward_input_rest"),
            DenseBackwardWeightDyUniform => ("dense.wgsl", "dense_backward_weight"),
            DenseBackwardBiasDyUniform => ("dense.wgsl", "dense_backward_bias"),
            DenseBackwardInputDyUniform => ("dense.wgsl", "dense_backward_input"),
            DenseBackwardInputRestDyUniform => ("dense.wgsl", "dense_backward_input_rest"),
            Conv2dReluMaxPool2ForwardGpu => ("conv2d.wgsl", "conv2d_relu_maxpool2_forward_gpu"),
            Conv2dWeightPartialsPooledGpu => ("conv2d.wgsl", "conv2d_weight_partials_pooled_gpu"),
            Conv2dWeightReduceGpu => ("conv2d.wgsl", "conv2d_weight_reduce_gpu"),
            DenseForwardGpu => ("dense.wgsl", "dense_forward_gpu"),
            DenseBackwardWeightGpu => ("dense.wgsl", "dense_backward_weight_gpu"),
            DenseBackwardInputGpu => ("dense.wgsl", "dense_backward_input_gpu"),
            SoftmaxXent => ("loss.wgsl", "softmax_xent"),
            Accumulate => ("loss.wgsl", "accumulate"),
            RegularizationLoss => ("optimizer.wgsl", "regularization_loss"),
            GradientSumsq => ("optimizer.wgsl", "gradient_sumsq"),
            AdamUpdate => ("optimizer.wgsl", "adam_update"),
            ClipByValue => ("constraints.wgsl", "clip_by_value"),
            NormConstraint => ("constraints.wgsl", "norm_constraint"),
        }
    }

    /// Kernels with a `GATE` override (apply relu'(y) to the incoming gradient): built in two variants.
    pub fn has_gate(self) -> bool {
        use Kernel::*;
        matches!(
            self,
            Conv2dWeightPartials
                | Conv2dBackwardInput
                | MaxPoolBackward
                | DenseBackwardWeight
                | DenseBackwardBias
                | DenseBackwardInput
                | DenseBackwardInputRest
                | DenseBackwardWeightDyUniform
                | DenseBackwardBiasDyUniform
                | DenseBackwardInputDyUniform
                | DenseBackwardInputRestDyUniform
                | DenseBackwardWeightGpu
                | DenseBackwardInputGpu
        )
    }

    /// The dense backward kernel reading dy through a uniform window instead of a storage binding.
    pub fn dy_uniform(self) -> Kernel {
        use Kernel::*;
        match self {
            DenseBackwardWeight => DenseBackwardWeightDyUniform,
            DenseBackwardBias => DenseBackwardBiasDyUniform,
            DenseBackwardInput => DenseBackwardInputDyUniform,
            DenseBackwardInputRest => DenseBackwardInputRestDyUniform,
            k => k,
        }
    }

    /// Pipeline-overridable constants of this kernel variant (`gate`: the GATE variant).
    pub fn constants(self, gate: bool) -> Vec<(&'static str, f64)> {
        let mut c = Vec::new();
        if self.has_gate() {
            c.push(("GATE", if gate { 1.0 } else { 0.0 }));
        }
        if matches!(
            self,
            Kernel::Conv2dWeightPartialsPooled | Kernel::Conv2dBackwardInputPooled
        ) {
            c.push(("POOLED", 1.0));
        }
        if matches!(
            self,
            Kernel::DenseBackwardWeightDyUniform
                | Kernel::DenseBackwardBiasDyUniform
                | Kernel::DenseBackwardInputDyUniform
                | Kernel::DenseBackwardInputRestDyUniform
        ) {
            c.push(("DY_UNIFORM", 1.0));
        }
        c
    }

    pub fn source_text(self) -> &'static str {
        let (file, _) = self.source();
        SHADERS
            .iter()
            .find(|(f, _)| *f == file)
            .map(|(_, s)| *s)
            .expect("kernel table names a shipped shader")
    }
}

/// Uniform structs, mirrored field for field from the WGSL files (`#[repr(C)]`, scalars, explicit padding).
pub mod uniforms {
    use bytemuck::{Pod, Zeroable};

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct GatherParams {
        pub rows: u32,
        pub full_batch: u32,
        pub per_image: u32,
        pub _pad: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct ConvParams {
        pub batch: u32,
        pub in_h: u32,
        pub in_w: u32,
        pub in_c: u32,
        pub out_h: u32,
        pub out_w: u32,
        pub out_c: u32,
        pub k: u32,
        pub pad: u32,
        pub relu: u32,
        pub rows_per: u32,
        pub chunks: u32,
        /// the GPU shape of the pooled weight gradient: pooled positions per chunk
        pub chunk_len: u32,
        pub _pad1: u32,
        pub _pad2: u32,
        pub _pad3: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct PoolParams {
        pub batch: u32,
        pub in_h: u32,
        pub in_w: u32,
        pub c: u32,
        pub out_h: u32,
        pub out_w: u32,
        pub k: u32,
        pub _pad: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct DenseParams {
        pub batch: u32,
        pub in_n: u32,
        pub out_n: u32,
        pub relu: u32,
        pub chunk: u32,
        pub chunks: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct LossParams {
        pub batch: u32,
        pub classes: u32,
        pub advance: u32,
        pub _pad: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct Segment {
        pub start: u32,
        pub len: u32,
        pub l1: f32,
        pub l2: f32,
        pub proximal: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct AdamParams {
        pub n: u32,
        pub n_segments: u32,
        pub lr: f32,
        pub beta1: f32,
        pub beta2: f32,
        pub one_minus_beta1: f32,
        pub one_minus_beta2: f32,
        pub eps: f32,
        pub weight_decay: f32,
        pub clip_mode: u32,
        pub clip_value: f32,
        pub _pad0: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct ClipParams {
        pub start: u32,
        pub len: u32,
        pub lo: f32,
        pub hi: f32,
        pub kind: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct NormParams {
        pub start: u32,
        pub n_groups: u32,
        pub n_reduce: u32,
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

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct State {
        pub step: u32,
        pub batch: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
    pub struct Metrics {
        pub loss_sum: f32,
        pub correct: f32,
        pub count: f32,
        pub nonfinite: u32,
    }

    const _: () = assert!(std::mem::size_of::<GatherParams>() == 16);
    const _: () = assert!(std::mem::size_of::<ConvParams>() == 64);
    const _: () = assert!(std::mem::size_of::<PoolParams>() == 32);
    const _: () = assert!(std::mem::size_of::<DenseParams>() == 32);
    const _: () = assert!(std::mem::size_of::<LossParams>() == 16);
    const _: () = assert!(std::mem::size_of::<Segment>() == 32);
    const _: () = assert!(std::mem::size_of::<AdamParams>() == 48);
    const _: () = assert!(std::mem::size_of::<ClipParams>() == 32);
    const _: () = assert!(std::mem::size_of::<NormParams>() == 96);
    const _: () = assert!(std::mem::size_of::<State>() == 8);
    const _: () = assert!(std::mem::size_of::<Metrics>() == 16);
}
