//! Profiling for `clampnet bench`: wall-clock time of each dispatch of a plan, GPU time from timestamp
//! queries (the one optional feature clampnet ever requests, and only for this), and what a step costs
//! the host to record.

use web_time::Instant;

use super::{Context, Dispatch};
use crate::error::Result;

/// Timestamp queries at the beginning and end of compute passes (the device must have been opened with
/// `GpuOptions::timestamps`).
struct PassTimer {
    queries: wgpu::QuerySet,
    resolve: super::Buffer,
    passes: u32,
}

impl PassTimer {
    fn new(ctx: &Context, passes: usize) -> Self {
        let passes = passes as u32;
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pass timestamps"),
            size: 16 * passes as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        PassTimer {
            queries: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * passes,
            }),
            resolve: super::Buffer {
                raw: resolve,
                label: "pass timestamps".into(),
                model_stride: 0,
                models: 1,
            },
            passes,
        }
    }

    /// The descriptor of timed pass `i`.
    fn pass(&self, i: u32) -> wgpu::ComputePassDescriptor<'_> {
        wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &self.queries,
                beginning_of_pass_write_index: Some(2 * i),
                end_of_pass_write_index: Some(2 * i + 1),
            }),
        }
    }

    /// Submit `enc` with the queries resolved, wait, and return each pass's GPU time in seconds.
    fn finish(self, ctx: &Context, mut enc: wgpu::CommandEncoder) -> Result<Vec<f64>> {
        enc.resolve_query_set(&self.queries, 0..2 * self.passes, &self.resolve.raw, 0);
        ctx.queue.submit([enc.finish()]);
        let ticks: Vec<u64> =
            bytemuck::pod_collect_to_vec(&ctx.read_bytes(&self.resolve, 0, self.resolve.size())?);
        let period_s = ctx.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(ticks
            .chunks_exact(2)
            .map(|t| t[1].saturating_sub(t[0]) as f64 * period_s)
            .collect())
    }
}

/// Each dispatch of `plan` on its own: `reps` back-to-back copies of it in one compute pass, one submit,
/// wall clock to completion; seconds per dispatch. The dispatches overwrite their buffers.
pub fn time_each(ctx: &Context, plan: &[Dispatch], reps: usize) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for d in plan {
        let run = |n: usize| -> Result<f64> {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                super::pipelines::encode(&mut pass, std::iter::repeat_n(d, n));
            }
            let t = Instant::now();
            ctx.queue.submit([enc.finish()]);
            ctx.wait()?;
            Ok(t.elapsed().as_secs_f64())
        };
        run(1)?;
        out.push(run(reps)? / reps as f64);
    }
    Ok(out)
}

/// GPU time of each dispatch of `plan` from timestamp queries: every dispatch in its own compute pass,
/// `steps` copies of the plan in one submit, the median per dispatch. None when the device was not
/// opened with timestamp queries.
pub fn timestamps_each(ctx: &Context, plan: &[Dispatch], steps: usize) -> Result<Option<Vec<f64>>> {
    if !ctx.timestamps || steps == 0 {
        return Ok(None);
    }
    let n = plan.len();
    let timer = PassTimer::new(ctx, n * steps);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    for s in 0..steps {
        for (k, d) in plan.iter().enumerate() {
            let mut pass = enc.begin_compute_pass(&timer.pass((s * n + k) as u32));
            super::pipelines::encode(&mut pass, [d]);
        }
    }
    let secs = timer.finish(ctx, enc)?;
    // the median over the steps: robust to a step slowed by something else on the machine
    Ok(Some(
        (0..n)
            .map(|k| {
                let mut t: Vec<f64> = (0..steps).map(|s| secs[s * n + k]).collect();
                t.sort_by(f64::total_cmp);
                t[steps / 2]
            })
            .collect(),
    ))
}

/// What running `plan` costs apart from its kernels: the host time to record it (the best of 3
/// recordings of `steps` copies, not submitted) and, with timestamp queries, the GPU time per copy of
/// `steps` copies in one pass (barriers and launch gaps included, the host excluded).
pub fn overheads(ctx: &Context, plan: &[Dispatch], steps: usize) -> Result<(f64, Option<f64>)> {
    let steps = steps.max(1);
    let record = |pass: &mut wgpu::ComputePass| {
        for _ in 0..steps {
            super::pipelines::encode(pass, plan);
        }
    };
    let mut encode = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        record(&mut enc.begin_compute_pass(&Default::default()));
        let cb = enc.finish();
        encode = encode.min(start.elapsed().as_secs_f64() / steps as f64);
        drop(cb);
    }
    if !ctx.timestamps {
        return Ok((encode, None));
    }
    let timer = PassTimer::new(ctx, 1);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    record(&mut enc.begin_compute_pass(&timer.pass(0)));
    let gpu = timer.finish(ctx, enc)?[0] / steps as f64;
    Ok((encode, Some(gpu)))
}
