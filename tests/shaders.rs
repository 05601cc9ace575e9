//! Portability, without a GPU: every WGSL file is parsed and validated by naga with default (baseline)
//! capabilities, its pipeline constants resolved as the trainer sets them, and translated to SPIR-V,
//! MSL, HLSL (SM 5.1) and GLSL (ES 3.10 and 4.30 compute). A failure names the shader, the entry point
//! and the backend. And every uniform struct has the size and field offsets of its Rust twin.

use std::collections::HashMap;

use clampnet::gpu::portability;
use clampnet::layers::{activation, batch_norm, conv2d, dense, dropout, pool};
use clampnet::optim::{adam, constraints, prologue, rmsprop, sgd};
use clampnet::step::{gather, kernels, loss};

/// Every shader the kernels use, once: (file, source).
fn shaders() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in kernels() {
        if !out.iter().any(|(f, _)| *f == k.shader.file) {
            out.push((k.shader.file, k.shader.source));
        }
    }
    out
}

fn parse(file: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    portability::validate(file, src).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_entry_point_translates_to_every_backend() {
    let all = kernels();
    match portability::check_all(&all) {
        Ok(n) => assert_eq!(n, all.iter().map(|k| k.variants().len()).sum::<usize>()),
        Err(errors) => panic!(
            "{} kernel variants fail to translate:\n{}",
            errors.len(),
            errors.join("\n")
        ),
    }
}

/// The K-model variant of every kernel (`gpu::batched`, a sweep's trials in one step) too.
#[test]
fn every_k_model_variant_translates_to_every_backend() {
    let all = kernels();
    match portability::check_all_k_models(&all) {
        Ok(n) => assert_eq!(n, all.iter().map(|k| k.variants().len()).sum::<usize>()),
        Err(errors) => panic!(
            "{} K-model variants fail to translate:\n{}",
            errors.len(),
            errors.join("\n")
        ),
    }
}

#[test]
fn every_shader_file_is_used_and_documented() {
    let used = shaders();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let text = std::fs::read_to_string(dir.join(&file)).unwrap();
        assert!(text.starts_with("//"), "{file} opens with a header comment");
        assert!(
            kernels()
                .iter()
                .any(|k| k.shader.parts.contains(&file.as_str())),
            "shaders/{file} has no kernel"
        );
    }
    // a shader is its files, in order
    for k in kernels() {
        let text: String = k
            .shader
            .parts
            .iter()
            .map(|p| std::fs::read_to_string(dir.join(p)).unwrap())
            .collect();
        assert_eq!(text, k.shader.source, "{}", k.shader.file);
    }
    assert!(!used.is_empty());
    // kernel names are unique: the pipelines, the listings and `bench --kernels` key on them
    let mut names: Vec<&str> = kernels().iter().map(|k| k.name).collect();
    names.sort();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate kernel names");
}

macro_rules! layout {
    ($t:ty; $($f:ident),*) => {
        (std::mem::size_of::<$t>(), vec![$((stringify!($f), std::mem::offset_of!($t, $f))),*])
    };
}

#[test]
fn uniform_structs_match_their_rust_twins() {
    // (struct, (size, [(field, offset)]))
    type Layout = (usize, Vec<(&'static str, usize)>);
    let rust: Vec<(&str, Layout)> = vec![
        (
            "GatherParams",
            layout!(gather::GatherParams; rows, full_batch, per_image, _pad),
        ),
        (
            "ConvParams",
            layout!(conv2d::ConvParams; batch, in_h, in_w, in_c, out_h, out_w, out_c, k, pad_h, relu, rows_per, chunks, chunk_len, pad_w, stride, group),
        ),
        (
            "PoolParams",
            layout!(pool::PoolParams; batch, in_h, in_w, c, out_h, out_w, kh, kw, sh, sw, pad_h, pad_w),
        ),
        (
            "BnParams",
            layout!(batch_norm::BnParams; rows, c, training, has_gamma, has_beta, gamma_at, beta_at, mean_at, var_at, momentum, one_minus_momentum, epsilon),
        ),
        (
            "DenseParams",
            layout!(dense::DenseParams; batch, in_n, out_n, relu, chunk, chunks, _pad0, _pad1),
        ),
        (
            "LossParams",
            layout!(loss::LossParams; batch, classes, advance, label_smoothing),
        ),
        (
            "Segment",
            layout!(prologue::Segment; start, len, l1, l2, proximal, _pad0, _pad1, _pad2),
        ),
        (
            "UpdateParams",
            layout!(prologue::UpdateParams; n, n_segments, lr, weight_decay, clip_mode, clip_value, _pad0, _pad1),
        ),
        (
            "AdamParams",
            layout!(adam::AdamParams; beta1, beta2, one_minus_beta1, one_minus_beta2, eps, _pad0, _pad1, _pad2),
        ),
        (
            "SgdParams",
            layout!(sgd::SgdParams; momentum, nesterov, has_momentum, _pad0),
        ),
        (
            "RmsPropParams",
            layout!(rmsprop::RmsPropParams; rho, one_minus_rho, momentum, eps, has_momentum, centered, _pad0, _pad1),
        ),
        (
            "ActivationParams",
            layout!(activation::ActivationParams; n, func, alpha, _pad0),
        ),
        (
            "DropoutParams",
            layout!(dropout::DropoutParams; n, threshold, scale, seed, salt, _pad0, _pad1, _pad2),
        ),
        (
            "ClipParams",
            layout!(constraints::ClipParams; start, len, lo, hi, kind, _pad0, _pad1, _pad2),
        ),
        (
            "NormParams",
            layout!(constraints::NormParams; start, n_groups, n_reduce, kind, min_value, max_value, rate, eps, kept_size, kept_stride, red_size, red_stride),
        ),
        ("State", layout!(gather::State; step, batch)),
        (
            "Metrics",
            layout!(loss::Metrics; loss_sum, correct, count, nonfinite),
        ),
    ];
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (file, src) in shaders() {
        let (module, _) = parse(file, src);
        for (_, ty) in module.types.iter() {
            let (Some(name), naga::TypeInner::Struct { members, span }) = (&ty.name, &ty.inner)
            else {
                continue;
            };
            // function-local values, never bound
            if [
                "UpdateLanes",
                "Window",
                "Holders",
                "PoolPair",
                "PoolMax",
                "PixelGrad",
            ]
            .contains(&name.as_str())
            {
                continue;
            }
            let (size, fields) = &rust
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{file}: struct {name} has no Rust twin"))
                .1;
            assert_eq!(*span as usize, *size, "{file}: struct {name} size");
            let wgsl: Vec<(&str, usize)> = members
                .iter()
                .map(|m| (m.name.as_deref().unwrap_or("?"), m.offset as usize))
                .collect();
            assert_eq!(&wgsl, fields, "{file}: struct {name} fields and offsets");
            *seen.entry(name.clone()).or_default() += 1;
        }
    }
    for (name, _) in &rust {
        assert!(
            seen.contains_key(*name),
            "struct {name} is not used by any shader"
        );
    }
}
