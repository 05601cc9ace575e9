//! Portability, without a GPU: every WGSL file is parsed and validated by naga with default (baseline)
//! capabilities, its pipeline constants resolved as the trainer sets them, and translated to SPIR-V,
//! MSL, HLSL (SM 5.1) and GLSL (ES 3.10 and 4.30 compute). A failure names the shader, the entry point
//! and the backend. And every uniform struct has the size and field offsets of its Rust twin.

use std::collections::HashMap;

use clampnet::gpu::{portability, uniforms as U, Kernel, SHADERS};

fn parse(file: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    portability::validate(file, src).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_entry_point_translates_to_every_backend() {
    match portability::check_all() {
        Ok(n) => assert_eq!(
            n,
            Kernel::ALL.len() + Kernel::ALL.iter().filter(|k| k.has_gate()).count()
        ),
        Err(errors) => panic!(
            "{} kernel variants fail to translate:\n{}",
            errors.len(),
            errors.join("\n")
        ),
    }
}

#[test]
fn every_shader_file_is_used_and_documented() {
    for (file, src) in SHADERS {
        assert!(
            Kernel::ALL.iter().any(|k| k.source().0 == *file),
            "{file} has no kernel"
        );
        assert!(src.starts_with("//"), "{file} opens with a header comment");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("shaders")
            .join(file);
        assert_eq!(&std::fs::read_to_string(path).unwrap(), src);
    }
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
            layout!(U::GatherParams; rows, full_batch, per_image, _pad),
        ),
        (
            "ConvParams",
            layout!(U::ConvParams; batch, in_h, in_w, in_c, out_h, out_w, out_c, k, pad, relu, rows_per, chunks, chunk_len, _pad1, _pad2, _pad3),
        ),
        (
            "PoolParams",
            layout!(U::PoolParams; batch, in_h, in_w, c, out_h, out_w, k, _pad),
        ),
        (
            "DenseParams",
            layout!(U::DenseParams; batch, in_n, out_n, relu, chunk, chunks, _pad0, _pad1),
        ),
        (
            "LossParams",
            layout!(U::LossParams; batch, classes, advance, _pad),
        ),
        (
            "Segment",
            layout!(U::Segment; start, len, l1, l2, proximal, _pad0, _pad1, _pad2),
        ),
        (
            "AdamParams",
            layout!(U::AdamParams; n, n_segments, lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay, clip_mode, clip_value, _pad0),
        ),
        (
            "ClipParams",
            layout!(U::ClipParams; start, len, lo, hi, kind, _pad0, _pad1, _pad2),
        ),
        (
            "NormParams",
            layout!(U::NormParams; start, n_groups, n_reduce, kind, min_value, max_value, rate, eps, kept_size, kept_stride, red_size, red_stride),
        ),
        ("State", layout!(U::State; step, batch)),
        (
            "Metrics",
            layout!(U::Metrics; loss_sum, correct, count, nonfinite),
        ),
    ];
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (file, src) in SHADERS {
        let (module, _) = parse(file, src);
        for (_, ty) in module.types.iter() {
            let (Some(name), naga::TypeInner::Struct { members, span }) = (&ty.name, &ty.inner)
            else {
                continue;
            };
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
