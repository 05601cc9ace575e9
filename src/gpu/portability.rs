//! Portability checks with naga, no GPU needed: every entry point (both `GATE` variants where a kernel
//! has them) validated with baseline capabilities and translated to SPIR-V, MSL, HLSL (SM 5.1) and GLSL
//! (ES 3.10 and 4.30). Used by the test suite and by `clampnet info`.

use naga::back::{glsl, hlsl, msl, spv};

use super::KernelDef;

/// The backends every shader is translated to.
pub const TARGETS: [&str; 5] = ["SPIR-V", "MSL", "HLSL 5.1", "GLSL ES 3.10", "GLSL 4.30"];

/// Parse and validate one WGSL source with naga's default (baseline) capabilities, plus subgroups for
/// a shader that enables them (the opt-in subgroup kernels, shaders/subgroups.wgsl).
pub fn validate(file: &str, src: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    validate_caps(file, src, src.starts_with(super::kernel::SUBGROUPS_PART))
}

/// `validate`, with the subgroup capability where `subgroups`.
fn validate_caps(
    file: &str,
    src: &str,
    subgroups: bool,
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(src)
        .map_err(|e| format!("shaders/{file}: {}", e.emit_to_string(src)))?;
    let (caps, which) = match subgroups {
        true => (naga::valid::Capabilities::SUBGROUP, "baseline + subgroup"),
        false => (naga::valid::Capabilities::default(), "baseline"),
    };
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| {
            format!(
                "shaders/{file}: validation with {which} capabilities: {}",
                e.emit_to_string(src)
            )
        })?;
    Ok((module, info))
}

/// Translate one kernel variant to every target; the error names shader, entry point, variant and backend.
pub fn translate(kernel: &KernelDef, gate: bool) -> Result<(), String> {
    translate_source(kernel, gate, kernel.shader.source)
}

/// `translate` of the kernel's K-model variant (`gpu::batched`).
pub fn translate_k_models(kernel: &KernelDef, gate: bool) -> Result<(), String> {
    let b = super::batched::batched(kernel.shader.file, kernel.shader.source)
        .map_err(|e| e.to_string())?;
    translate_source(kernel, gate, &b.source).map_err(|e| format!("(K models) {e}"))
}

fn translate_source(kernel: &KernelDef, gate: bool, source: &str) -> Result<(), String> {
    let (file, entry) = (kernel.shader.file, kernel.entry);
    let (module, info) = validate_caps(file, source, kernel.shader.needs_subgroups())?;
    let mut constants = naga::back::PipelineConstants::default();
    for (name, value) in kernel.constants(gate) {
        constants.insert(name.to_string(), value);
    }
    let stage = naga::ShaderStage::Compute;
    let at = |backend: &str, e: &dyn std::fmt::Display| {
        format!("shaders/{file} entry point {entry} (GATE {gate}) -> {backend}: {e}")
    };
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((stage, entry)),
        &constants,
    )
    .map_err(|e| at("pipeline constants", &e))?;

    let spv_pipe = spv::PipelineOptions {
        shader_stage: stage,
        entry_point: entry.into(),
    };
    // subgroup kernels: the versions that have subgroup operations (SPIR-V 1.3, MSL 2.3, HLSL SM 6.0)
    let sub = kernel.shader.needs_subgroups();
    let spv_opts = spv::Options {
        lang_version: if sub { (1, 3) } else { (1, 0) },
        ..Default::default()
    };
    spv::write_vec(&module, &info, &spv_opts, Some(&spv_pipe)).map_err(|e| at(TARGETS[0], &e))?;

    let msl_pipe = msl::PipelineOptions {
        entry_point: Some((stage, entry.into())),
        ..Default::default()
    };
    let msl_opts = msl::Options {
        lang_version: if sub { (2, 3) } else { (1, 0) },
        ..Default::default()
    };
    msl::write_string(&module, &info, &msl_opts, &msl_pipe).map_err(|e| at(TARGETS[1], &e))?;

    let hlsl_opts = hlsl::Options {
        shader_model: if sub {
            hlsl::ShaderModel::V6_0
        } else {
            hlsl::ShaderModel::V5_1
        },
        ..Default::default()
    };
    let hlsl_pipe = hlsl::PipelineOptions {
        entry_point: Some((stage, entry.into())),
    };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_opts, &hlsl_pipe)
        .write(&module, &info, None)
        .map_err(|e| at(TARGETS[2], &e))?;

    for (version, name) in [
        (
            glsl::Version::Embedded {
                version: 310,
                is_webgl: false,
            },
            TARGETS[3],
        ),
        (glsl::Version::Desktop(430), TARGETS[4]),
    ] {
        let opts = glsl::Options {
            version,
            ..Default::default()
        };
        let pipe = glsl::PipelineOptions {
            shader_stage: stage,
            entry_point: entry.into(),
            multiview: None,
        };
        let mut out = String::new();
        glsl::Writer::new(
            &mut out,
            &module,
            &info,
            &opts,
            &pipe,
            naga::proc::BoundsCheckPolicies::default(),
        )
        .and_then(|mut w| w.write().map(|_| ()))
        .map_err(|e| at(name, &e))?;
    }
    Ok(())
}

/// Every variant of `kernels`: the number translated, or every failure.
pub fn check_all(kernels: &[&KernelDef]) -> Result<usize, Vec<String>> {
    check_each(kernels, translate)
}

/// `check_all` of the K-model variants.
pub fn check_all_k_models(kernels: &[&KernelDef]) -> Result<usize, Vec<String>> {
    check_each(kernels, translate_k_models)
}

fn check_each(
    kernels: &[&KernelDef],
    translate: fn(&KernelDef, bool) -> Result<(), String>,
) -> Result<usize, Vec<String>> {
    let mut errors = Vec::new();
    let mut n = 0;
    for kernel in kernels {
        for &gate in kernel.variants() {
            match translate(kernel, gate) {
                Ok(()) => n += 1,
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(n)
    } else {
        Err(errors)
    }
}
