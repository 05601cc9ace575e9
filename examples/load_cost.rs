//! What a memory access costs on the current adapter: `cargo run --release --example load_cost`.
//!
//! Each entry point runs a loop of 256 iterations in 16,384 invocations; the printed figure is the time
//! per iteration per 8 invocations (one llvmpipe SIMD vector), machine-wide. `fma_only` is the loop with
//! one dependent multiply-add and no load: subtract it from the others to get the cost of their access.
//! The README's lavapipe cost table comes from this; it shaped clampnet's CPU-adapter kernels.
//!
//! The `top_*` entry points do the same 256 steps as straight-line code, outside any loop: there llvmpipe
//! runs without an execution mask, and loads whose offset is a constant take one load for all 8 lanes
//! (`top_*_const`; an offset from the workgroup id or a uniform's value does not count as uniform to it).
//! `LOAD_COST_ONLY=<entry>` builds that one entry point and runs it for a minute (for a disassembly with
//! tools/jit_dump.sh's method).
use clampnet::gpu::{Context, GpuOptions, KernelDef, Pipelines, Recorder, Shader};
use std::time::Instant;

const WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> s: array<f32>;
@group(0) @binding(1) var<uniform> u: array<vec4<f32>, 4096>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
@group(0) @binding(3) var<storage, read> s4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> o4: array<vec4<f32>>;
override N: u32 = 256u;

@compute @workgroup_size(64)
fn fma_only(@builtin(global_invocation_id) g: vec3<u32>) {
    var a = f32(g.x);
    for (var i = 0u; i < N; i++) { a = a * 0.999 + f32(i); }
    o[g.x] = a + s[0] + u[0].x + s4[0].x;
}
@compute @workgroup_size(64)
fn ssbo_divergent(@builtin(global_invocation_id) g: vec3<u32>) {
    var a = 0.0;
    for (var i = 0u; i < N; i++) { a = a * 0.999 + s[(g.x * 7u + i) & 65535u]; }
    o[g.x] = a + u[0].x + s4[0].x;
}
@compute @workgroup_size(64)
fn ssbo_uniform(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    var a = 0.0;
    for (var i = 0u; i < N; i++) { a = a * 0.999 + s[(w.x + i) & 65535u]; }
    o[g.x] = a + u[0].x + s4[0].x;
}
@compute @workgroup_size(64)
fn ssbo_vec4_divergent(@builtin(global_invocation_id) g: vec3<u32>) {
    var a = vec4<f32>(0.0);
    for (var i = 0u; i < N; i += 4u) { a = a * 0.999 + s4[(g.x * 7u + i) & 16383u]; }
    o[g.x] = a.x + a.y + a.z + a.w + u[0].x + s[0];
}
@compute @workgroup_size(64)
fn ubo_divergent(@builtin(global_invocation_id) g: vec3<u32>) {
    var a = 0.0;
    for (var i = 0u; i < N; i++) { a = a * 0.999 + u[(g.x * 7u + i) & 4095u].x; }
    o[g.x] = a + s[0] + s4[0].x;
}
@compute @workgroup_size(64)
fn ubo_uniform(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    var a = 0.0;
    for (var i = 0u; i < N; i++) { a = a * 0.999 + u[(w.x + i) & 4095u].x; }
    o[g.x] = a + s[0] + s4[0].x;
}
@compute @workgroup_size(64)
fn ubo_vec4_uniform(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    var a = vec4<f32>(0.0);
    for (var i = 0u; i < N; i += 4u) { a = a * 0.999 + u[(w.x + i) & 4095u]; }
    o[g.x] = a.x + a.y + a.z + a.w + s[0] + s4[0].x;
}
@compute @workgroup_size(64)
fn ubo_dyncomp_uniform(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    var a = 0.0;
    for (var i = 0u; i < N; i++) { let k = (w.x + i) & 16383u; a = a * 0.999 + u[k >> 2u][k & 3u]; }
    o[g.x] = a + s[0] + s4[0].x;
}
override K: u32 = 4u;
@compute @workgroup_size(64)
fn inner_const_loop(@builtin(global_invocation_id) g: vec3<u32>) {
    var a = f32(g.x);
    for (var i = 0u; i < N; i += 4u) { for (var j = 0u; j < 4u; j++) { a = a * 0.999 + f32(j); } }
    o[g.x] = a + s[0] + u[0].x + s4[0].x;
}
@compute @workgroup_size(64)
fn inner_override_loop(@builtin(global_invocation_id) g: vec3<u32>) {
    var a = f32(g.x);
    for (var i = 0u; i < N; i += 4u) { for (var j = 0u; j < K; j++) { a = a * 0.999 + f32(j); } }
    o[g.x] = a + s[0] + u[0].x + s4[0].x;
}
@compute @workgroup_size(64)
fn inner_manual_unroll(@builtin(global_invocation_id) g: vec3<u32>) {
    var a = f32(g.x);
    for (var i = 0u; i < N; i += 4u) { a = a * 0.999 + 0.0; a = a * 0.999 + 1.0; a = a * 0.999 + 2.0; a = a * 0.999 + 3.0; }
    o[g.x] = a + s[0] + u[0].x + s4[0].x;
}
@compute @workgroup_size(64)
fn fma_8_chains(@builtin(global_invocation_id) g: vec3<u32>) {
    var a = vec4<f32>(f32(g.x)); var b = a;
    for (var i = 0u; i < N; i++) { a = a * 0.999 + f32(i); b = b * 0.998 + f32(i); }
    o[g.x] = a.x + b.y + a.z + b.w + s[0] + u[0].x + s4[0].x;
}
@compute @workgroup_size(64)
fn acc_4vec4(@builtin(global_invocation_id) g: vec3<u32>) {
    let z = vec4<f32>(f32(g.x));
    var a0 = z; var a1 = z; var a2 = z; var a3 = z;
    for (var i = 0u; i < N; i++) {
        let k = vec4<f32>(f32(i)) * 0.5; let v = f32(i) * 0.25;
        a0 += v * k; a1 += v * k.yzwx; a2 += v * k.zwxy; a3 += v * k.wxyz;
    }
    o[g.x] = dot(a0 + a1 + a2 + a3, vec4<f32>(1.0)) + s[0] + u[0].x + s4[0].x;
}
@compute @workgroup_size(64)
fn acc_16vec4(@builtin(global_invocation_id) g: vec3<u32>) {
    let z = vec4<f32>(f32(g.x));
    var a0 = z; var a1 = z; var a2 = z; var a3 = z; var b0 = z; var b1 = z; var b2 = z; var b3 = z;
    var c0 = z; var c1 = z; var c2 = z; var c3 = z; var d0 = z; var d1 = z; var d2 = z; var d3 = z;
    for (var i = 0u; i < N; i += 4u) {
        let k = vec4<f32>(f32(i)) * 0.5; let v = vec4<f32>(f32(i) * 0.25, 0.1, 0.2, 0.3);
        a0 += v.x * k; a1 += v.x * k.yzwx; a2 += v.x * k.zwxy; a3 += v.x * k.wxyz;
        b0 += v.y * k; b1 += v.y * k.yzwx; b2 += v.y * k.zwxy; b3 += v.y * k.wxyz;
        c0 += v.z * k; c1 += v.z * k.yzwx; c2 += v.z * k.zwxy; c3 += v.z * k.wxyz;
        d0 += v.w * k; d1 += v.w * k.yzwx; d2 += v.w * k.zwxy; d3 += v.w * k.wxyz;
    }
    o[g.x] = dot(a0 + a1 + a2 + a3 + b0 + b1 + b2 + b3 + c0 + c1 + c2 + c3 + d0 + d1 + d2 + d3, vec4<f32>(1.0)) + s[0] + u[0].x + s4[0].x;
}
var<workgroup> sh: array<f32, 4096>;
@compute @workgroup_size(64)
fn shared_divergent(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    for (var i = l; i < 4096u; i += 64u) { sh[i] = f32(i); }
    workgroupBarrier();
    var a = 0.0;
    for (var i = 0u; i < N; i++) { a = a * 0.999 + sh[(l * 7u + i) & 4095u]; }
    o[g.x] = a + s[0] + u[0].x + s4[0].x;
}
@compute @workgroup_size(64)
fn private_array(@builtin(global_invocation_id) g: vec3<u32>) {
    var p: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { p[i] = s[g.x * 16u + i]; }
    var a = 0.0;
    for (var i = 0u; i < N; i++) { a = a * 0.999 + p[i & 15u]; }
    o[g.x] = a + u[0].x + s4[0].x;
}
"#;

/// Straight-line variants (no loop around the accesses, so llvmpipe runs them without an execution mask):
/// 256 statements each, generated.
fn straight_line() -> String {
    let mut w = String::new();
    let body = |f: &dyn Fn(u32) -> String, n: u32| -> String {
        (0..n).map(f).collect::<Vec<_>>().join("\n    ")
    };
    let head = "@compute @workgroup_size(64)\nfn ";
    let args = "(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {\n    var a = f32(g.x);\n    var a4 = vec4<f32>(a);\n    ";
    // the result is stored twice: a value used by one per-lane store alone is sunk into the store's lane
    // loop by LLVM and computed one lane at a time (scalar instructions)
    let tail = "\n    let r = a + a4.x + a4.y + a4.z + a4.w + s[0] + u[0].x + s4[0].x;\n    o[g.x] = r;\n    o[(g.x + 8192u) & 16383u] = r;\n}\n";
    let mut add = |name: &str, pre: &str, b: String| {
        w += &format!("{head}{name}{args}{pre}{b}{tail}");
    };
    add(
        "top_mul_add",
        "",
        body(&|k| format!("a = a * 0.999 + {k}.0;"), 256),
    );
    add(
        "top_fma",
        "",
        body(&|k| format!("a = fma(a, 0.999, {k}.0);"), 256),
    );
    add(
        "top_ssbo_const",
        "",
        body(&|k| format!("a = a * 0.999 + s[{k}u];"), 256),
    );
    add(
        "top_ubo_const",
        "",
        body(&|k| format!("a = a * 0.999 + u[{k}u].x;"), 256),
    );
    add(
        "top_ssbo_uniform",
        "",
        body(
            &|k| format!("a = a * 0.999 + s[(w.x * 7u + {k}u) & 65535u];"),
            256,
        ),
    );
    add(
        "top_ssbo_uniform_after_return",
        "if (g.x >= 1000000u) { return; }\n    ",
        body(
            &|k| format!("a = a * 0.999 + s[(w.x * 7u + {k}u) & 65535u];"),
            256,
        ),
    );
    add(
        "top_ssbo_divergent",
        "",
        body(
            &|k| format!("a = a * 0.999 + s[(g.x * 7u + {k}u) & 65535u];"),
            256,
        ),
    );
    add(
        "top_ssbo_vec4_divergent",
        "",
        body(
            &|k| format!("a4 = a4 * 0.999 + s4[(g.x * 7u + {k}u) & 16383u];"),
            64,
        ),
    );
    add(
        "top_ssbo_vec4_uniform",
        "",
        body(
            &|k| format!("a4 = a4 * 0.999 + s4[(w.x * 7u + {k}u) & 16383u];"),
            64,
        ),
    );
    add(
        "top_ubo_uniform",
        "",
        body(
            &|k| format!("a = a * 0.999 + u[(w.x + {k}u) & 4095u].x;"),
            256,
        ),
    );
    add(
        "top_ubo_divergent",
        "",
        body(
            &|k| format!("a = a * 0.999 + u[(g.x * 7u + {k}u) & 4095u].x;"),
            256,
        ),
    );
    add(
        "top_ubo_vec4_divergent",
        "",
        body(
            &|k| format!("a4 = a4 * 0.999 + u[(g.x * 7u + {k}u) & 4095u];"),
            64,
        ),
    );
    add(
        "top_store_divergent",
        "",
        body(
            &|k| format!("o[(g.x * 64u + {k}u) & 16383u] = a + {k}.0;"),
            256,
        ),
    );
    add(
        "top_store_vec4_divergent",
        "",
        body(
            &|k| format!("o4[(g.x * 16u + {k}u) & 4095u] = a4 + vec4<f32>({k}.0);"),
            64,
        ),
    );
    w
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source: &'static str = Box::leak(format!("{WGSL}\n{}", straight_line()).into_boxed_str());
    let shader: &'static Shader = Box::leak(Box::new(Shader {
        file: "load_cost (examples/load_cost.rs)",
        parts: &[],
        source,
    }));
    let ctx = Context::new(&GpuOptions::default())?;
    let s = ctx.storage_init("s", &vec![1u8; 1 << 18]);
    let u = ctx.uniform("u", &[0u8; 65536]);
    let groups = 256u32;
    let o = ctx.storage_zeroed("o", 65536);
    let o4 = ctx.storage_zeroed("o4", 65536);
    let entries = [
        "fma_only",
        "ssbo_divergent",
        "ssbo_uniform",
        "ssbo_vec4_divergent",
        "ubo_divergent",
        "ubo_uniform",
        "ubo_vec4_uniform",
        "ubo_dyncomp_uniform",
        "shared_divergent",
        "private_array",
        "inner_const_loop",
        "inner_override_loop",
        "inner_manual_unroll",
        "fma_8_chains",
        "acc_4vec4",
        "acc_16vec4",
        "top_mul_add",
        "top_fma",
        "top_ssbo_const",
        "top_ubo_const",
        "top_ssbo_uniform",
        "top_ssbo_uniform_after_return",
        "top_ssbo_divergent",
        "top_ssbo_vec4_divergent",
        "top_ssbo_vec4_uniform",
        "top_ubo_uniform",
        "top_ubo_divergent",
        "top_ubo_vec4_divergent",
        "top_store_divergent",
        "top_store_vec4_divergent",
    ];
    let only = std::env::var("LOAD_COST_ONLY").ok();
    let entries: Vec<&str> = entries
        .into_iter()
        .filter(|e| only.as_deref().is_none_or(|o| o == *e))
        .collect();
    let kernels: Vec<&'static KernelDef> = entries
        .iter()
        .map(|&e| {
            &*Box::leak(Box::new(KernelDef {
                name: e,
                shader,
                entry: e,
                constants: &[],
                gated: false,
            }))
        })
        .collect();
    let pipes = Pipelines::new(&ctx, &kernels)?;
    let mut r = Recorder::new(&ctx, &pipes);
    for k in &kernels {
        let d = r
            .dispatch(k)
            .bind("s", &s)
            .bind("u", &u)
            .bind("o", &o)
            .bind("s4", &s);
        let d = if k.entry == "top_store_vec4_divergent" {
            d.bind("o4", &o4)
        } else {
            d
        };
        d.grid((groups, 1, 1));
    }
    let plan = r.finish()?;
    // LOAD_COST_ONLY=entry: run that one for a minute (for tools/jit_dump.sh-style disassembly)
    if only.is_some() {
        let t = Instant::now();
        while t.elapsed().as_secs() < 60 {
            ctx.submit(std::iter::repeat_n(&plan[0], 10), None);
            ctx.wait()?;
        }
        return Ok(());
    }
    for (e, d) in entries.iter().zip(&plan) {
        let run = |reps: usize| -> clampnet::Result<()> {
            ctx.submit(std::iter::repeat_n(d, reps), None);
            ctx.wait()
        };
        run(2)?;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            run(10)?;
            best = best.min(t.elapsed().as_secs_f64() / 10.0);
        }
        // 256 loop iterations x 16384 invocations
        let per = best / (256.0 * 16384.0 / 8.0) * 1e9;
        println!(
            "{e:22} {:8.1} us/dispatch  {:6.2} ns per 8-lane iteration",
            best * 1e6,
            per
        );
    }
    ctx.check()?;
    Ok(())
}
