//! Forward-only inference for `predict` and `eval`: the model's ops with no gradients, no loss and no
//! optimizer state; the logits of every example of a split, a batch at a time.

use crate::data::Split;
use crate::error::{Error, Result};
use crate::gpu::{Context, Dispatch, Pipelines, Recorder};
use crate::model::ModelPlan;
use crate::step::gather::GpuSplit;
use crate::step::{kernels, Network};

pub struct Predictor<'a> {
    ctx: &'a Context,
    pipes: std::sync::Arc<Pipelines>,
    net: Network,
}

impl<'a> Predictor<'a> {
    /// `weights` in the model's parameter order; batches of up to `batch` rows, in the context's kernel
    /// set, fused where it can.
    pub fn new(
        ctx: &'a Context,
        model: ModelPlan,
        weights: &[Vec<f32>],
        batch: usize,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        let set = ctx.kernel_set;
        Ok(Predictor {
            ctx,
            pipes: Pipelines::shared(ctx, &kernels())?,
            net: Network::new(ctx, model, (set, true, &[0]), batch, false, weights)?,
        })
    }

    /// The logits of every example of `split`, in order ([n, classes], row-major).
    pub fn logits(&self, split: &Split) -> Result<Vec<f32>> {
        let ctx = self.ctx;
        let model = &self.net.model;
        let [h, w, c] = model.spec.input;
        if (split.height, split.width, split.channels) != (h, w, c) {
            return Err(Error::Config(format!(
                "images are {}x{}x{}, but the model's input is {h}x{w}x{c}",
                split.height, split.width, split.channels
            )));
        }
        GpuSplit::check_size(ctx, split, "input")?;
        let data = GpuSplit::upload(ctx, split, "input");
        let (n, b, k) = (split.len(), self.net.batch, model.classes);
        let steps = n.div_ceil(b);
        let mut r = Recorder::new(ctx, &self.pipes);
        let mut plan = |rows: usize| -> Result<Vec<Dispatch>> {
            self.net.input.record(&mut r, &data, rows, b);
            self.net.record_forward(&mut r, rows, None);
            r.finish()
        };
        let full = plan(b.min(n))?;
        let last = (!n.is_multiple_of(b)).then(|| plan(n % b)).transpose()?;
        let mut out = Vec::with_capacity(n * k);
        for step in 0..steps {
            let rows = b.min(n - step * b);
            let p = match (&last, step + 1 == steps) {
                (Some(l), true) => l,
                _ => &full,
            };
            data.begin(ctx, 0, step);
            ctx.submit(p, None);
            out.extend(ctx.read_f32(self.net.logits(), 0, (rows * k) as u64)?);
        }
        Ok(out)
    }
}
