//! `clampnet info`: every adapter with the limits clampnet needs, the naga check of every shader, and
//! the adapter and kernel set `train` would use.

use super::GpuArgs;
use clampnet::gpu::{self, portability, Context};
use clampnet::Result;

pub fn run(g: GpuArgs) -> Result<()> {
    let (backends, adapters) = gpu::adapters(g.backend.as_deref())?;
    println!("adapters ({backends}):");
    for a in &adapters {
        println!("  {}", a.description);
        println!(
            "    limits: storage binding {} MiB (needs the data: 47 MiB for Fashion-MNIST), uniform binding {} KiB (needs 64), \
             buffer {} MiB, {} storage buffers per stage (needs 8), {} workgroups per dimension, \
             {} invocations per workgroup (needs 256), {} KiB workgroup memory (needs 16)",
            a.max_storage_buffer_binding_size / (1 << 20),
            a.max_uniform_buffer_binding_size / 1024,
            a.max_buffer_size / (1 << 20),
            a.max_storage_buffers_per_shader_stage,
            a.max_compute_workgroups_per_dimension,
            a.max_compute_invocations_per_workgroup,
            a.max_compute_workgroup_storage_size / 1024,
        );
        println!(
            "    optional features present: {} (clampnet requests none by default: baseline WebGPU; \
             subgroup with --subgroups, timestamp-query for bench --kernels)",
            if a.optional_features.is_empty() {
                "none".to_string()
            } else {
                a.optional_features.join(", ")
            }
        );
    }
    let kernels = clampnet::step::kernels();
    match portability::check_all(&kernels).and_then(|n| {
        portability::check_all_k_models(&kernels).map(|k| (n, k))
    }) {
        Ok((n, k)) => println!(
            "shaders: {n} kernel variants validated by naga and translated to {} (the {sub} opt-in subgroup ones with the subgroup capability, to SPIR-V 1.3, MSL 2.3 and HLSL 6.0); their {k} K-model variants (a sweep's trials in one step) too",
            portability::TARGETS.join(", "),
            sub = kernels.iter().filter(|k| k.shader.needs_subgroups()).count(),
        ),
        Err(errors) => println!(
            "shaders: {} kernel variants fail to translate:\n  {}",
            errors.len(),
            errors.join("\n  ")
        ),
    }
    match Context::new(&g.options()) {
        Ok(ctx) => println!(
            "train would use: {}, {} kernels",
            gpu::describe(&ctx.info),
            ctx.kernel_set.name()
        ),
        Err(e) => println!("train would fail: {e}"),
    }
    Ok(())
}
