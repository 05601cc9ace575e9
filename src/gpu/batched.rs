//! The K-model variant of a shader, generated from its one-model source: the kernels a sweep runs when
//! K trials of one architecture and batch size step together in one set of dispatches. The math of
//! every kernel is written once; this rewrite only moves each model to its own slice of the buffers:
//!
//! - the grid's z dimension holds K copies of the one-model grid: model `m = workgroup_id.z / gz`, and
//!   the kernel sees `workgroup_id.z % gz` (likewise `global_invocation_id`, `num_workgroups`);
//! - every per-model binding is indexed from the model's offset: `x[i]` becomes
//!   `x[clampnet_o_x + (i)]` for a storage array, and a storage struct `state` becomes
//!   `state[clampnet_o_state]` of an array of them; `clampnet_o_x = m * stride` with the stride (in
//!   elements) of the buffer bound there, from a uniform the recorder fills per dispatch (0 for a
//!   buffer all models share, such as the dataset);
//! - the uniforms that hold per-trial values: the constraints' (`C`, `N`) and dropout's (`D`: the
//!   seed) become read-only storage
//!   arrays of them, indexed the same way; the uniform windows of per-model data (the penalty table
//!   `segments`; `kernel_u` and `dy_u`, llvmpipe's fast paths) stay uniform windows, which now hold
//!   every model's part and are indexed from the model's offset in them (an op uses them only where K
//!   parts fit one window). Every other uniform stays shared.
//!
//! Because each model's arithmetic is the one-model kernel's, operation for operation, a model of a
//! K-model step computes bit for bit what a one-model step computes (tests/batched.rs checks it).

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Uniform structs that hold per-trial values: storage arrays of them in a K-model kernel.
pub const PER_MODEL_STRUCTS: &[&str] = &["C", "N", "D"];
/// Uniform arrays that hold every model's part in one window, indexed from the model's offset.
pub const PER_MODEL_WINDOWS: &[&str] = &["segments", "kernel_u", "dy_u"];

/// The binding of the models uniform (`ModelsParams`) in every K-model shader.
pub const MODELS_BINDING: u32 = 31;
/// The name the K-model shaders give it.
pub const MODELS_NAME: &str = "clampnet_models";
/// Binding numbers a per-model binding may have (the stride table's length).
pub const MAX_SLOTS: usize = 20;

/// The models uniform, field for field with the WGSL `ClampnetModels`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ModelsParams {
    /// the one-model grid's z size
    pub gz: u32,
    pub models: u32,
    pub _pad: [u32; 2],
    /// per binding number: the per-model stride, in elements of the binding's array (0: shared)
    pub stride: [u32; MAX_SLOTS],
}
const _: () = assert!(std::mem::size_of::<ModelsParams>() == 96);

/// How a binding of a K-model shader finds its model's part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerModel {
    /// bytes of one element of the binding's array (the unit of its stride)
    pub unit: u32,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// a storage binding (a uniform struct of the one-model shader is one now)
    Storage,
    /// a uniform window holding every model's part
    Window,
}

/// A K-model shader: its source, and its per-model bindings by name.
#[derive(Clone, Debug)]
pub struct BatchedShader {
    pub source: String,
    pub per_model: HashMap<String, PerModel>,
}

/// `source` without `//` comments.
fn strip_comments(source: &str) -> String {
    source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Byte positions of `name` as a whole identifier, not after a `.` (a field) and not in its own
/// declaration (`var<...> name`).
fn uses(src: &str, name: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = src[from..].find(name).map(|i| i + from) {
        from = i + name.len();
        let before = src[..i].chars().next_back();
        let after = src[i + name.len()..].chars().next();
        if before.is_some_and(|c| is_ident(c) || c == '.') || after.is_some_and(is_ident) {
            continue;
        }
        if src[..i].trim_end().ends_with('>')
            && src[..i]
                .trim_end()
                .rsplit("var")
                .next()
                .is_some_and(|s| s.starts_with('<') && !s.contains(';'))
        {
            continue;
        }
        out.push(i);
    }
    out
}

/// The index of the `]` matching the `[` at `open`.
fn matching(src: &str, open: usize, (o, c): (u8, u8)) -> Option<usize> {
    let mut depth = 0i32;
    for (i, b) in src.bytes().enumerate().skip(open) {
        if b == o {
            depth += 1;
        } else if b == c {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

enum Rewrite {
    /// an array: `name[i]` -> `name[o + (i)]`
    Offset,
    /// a struct: `name` -> `name[o]`
    Index,
}

/// The K-model variant of the shader `file` (see the module's documentation).
pub fn batched(file: &str, source: &str) -> Result<BatchedShader> {
    let fail = |what: String| Error::gpu(format!("the K-model variant of shaders/{file}"), what);
    let src = strip_comments(source);
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| fail(e.emit_to_string(&src)))?;
    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(module.to_ctx())
        .map_err(|e| fail(format!("{e}")))?;
    // which bindings move per model, and how
    let mut plan: Vec<(String, u32, Rewrite, PerModel)> = Vec::new();
    for (_, var) in module.global_variables.iter() {
        let (Some(name), Some(rb)) = (&var.name, &var.binding) else {
            continue;
        };
        let ty = &module.types[var.ty].inner;
        let array = match ty {
            naga::TypeInner::Array { stride, .. } => Some(*stride),
            _ => None,
        };
        let n = name.as_str();
        let (rewrite, unit, kind) = match (var.space, array) {
            (naga::AddressSpace::Storage { .. }, Some(stride)) => {
                (Rewrite::Offset, stride, Kind::Storage)
            }
            (naga::AddressSpace::Storage { .. }, None) => {
                (Rewrite::Index, layouter[var.ty].to_stride(), Kind::Storage)
            }
            (naga::AddressSpace::Uniform, None) if PER_MODEL_STRUCTS.contains(&n) => {
                (Rewrite::Index, layouter[var.ty].to_stride(), Kind::Storage)
            }
            (naga::AddressSpace::Uniform, Some(stride)) if PER_MODEL_WINDOWS.contains(&n) => {
                (Rewrite::Offset, stride, Kind::Window)
            }
            _ => continue,
        };
        if rb.binding as usize >= MAX_SLOTS {
            return Err(fail(format!(
                "binding {name} is number {}: per-model bindings must be below {MAX_SLOTS}",
                rb.binding
            )));
        }
        plan.push((name.clone(), rb.binding, rewrite, PerModel { unit, kind }));
    }
    // a local or argument named like a moved binding would be rewritten too: refuse it
    for (_, f) in module.functions.iter() {
        check_shadowing(&module, f, &plan).map_err(&fail)?;
    }
    for ep in &module.entry_points {
        check_shadowing(&module, &ep.function, &plan).map_err(&fail)?;
    }
    let mut out = src;
    for (name, _, rewrite, _) in &plan {
        let (to_array, to_storage) = match rewrite {
            Rewrite::Index => (true, PER_MODEL_STRUCTS.contains(&name.as_str())),
            Rewrite::Offset => (false, false),
        };
        out = rewrite_declaration(&out, name, to_array, to_storage)
            .ok_or_else(|| fail(format!("cannot find the declaration of {name}")))?;
        out = match rewrite {
            Rewrite::Offset => offset_uses(&out, name).map_err(&fail)?,
            Rewrite::Index => index_uses(&out, name),
        };
    }
    let entries: Vec<String> = module.entry_points.iter().map(|e| e.name.clone()).collect();
    for e in &entries {
        out = rewrite_entry(&out, e, &plan).map_err(&fail)?;
    }
    let mut head = format!(
        "struct ClampnetModels {{ gz: u32, models: u32, _p0: u32, _p1: u32, stride: array<vec4<u32>, {}> }}\n\
         @group(0) @binding({MODELS_BINDING}) var<uniform> {MODELS_NAME}: ClampnetModels;\n",
        MAX_SLOTS / 4
    );
    for (name, ..) in &plan {
        head.push_str(&format!("var<private> clampnet_o_{name}: u32;\n"));
    }
    let source = format!("{head}{out}");
    naga::front::wgsl::parse_str(&source).map_err(|e| fail(e.emit_to_string(&source)))?;
    Ok(BatchedShader {
        source,
        per_model: plan.into_iter().map(|(n, _, _, pm)| (n, pm)).collect(),
    })
}

fn check_shadowing(
    module: &naga::Module,
    f: &naga::Function,
    plan: &[(String, u32, Rewrite, PerModel)],
) -> std::result::Result<(), String> {
    let names = f
        .local_variables
        .iter()
        .filter_map(|(_, v)| v.name.as_deref())
        .chain(f.arguments.iter().filter_map(|a| a.name.as_deref()))
        .chain(f.named_expressions.values().map(String::as_str));
    for n in names {
        if plan.iter().any(|(p, ..)| p == n) {
            return Err(format!(
                "function {} has a local named {n}, like a binding: rename it",
                f.name.as_deref().unwrap_or("?")
            ));
        }
    }
    let _ = module;
    Ok(())
}

/// `var<space> name: T;` -> `array<T>` (`to_array`, a struct), in storage where `to_storage` (a
/// uniform struct).
fn rewrite_declaration(src: &str, name: &str, to_array: bool, to_storage: bool) -> Option<String> {
    let mut from = 0;
    while let Some(v) = src[from..].find("var<").map(|i| i + from) {
        from = v + 4;
        let close = v + src[v..].find('>')?;
        let rest = &src[close + 1..];
        let trimmed = rest.trim_start();
        if !trimmed.starts_with(name) || trimmed[name.len()..].chars().next().is_some_and(is_ident)
        {
            continue;
        }
        let semi = close + 1 + rest.find(';')?;
        let colon = close + 1 + rest.find(':')?;
        let ty = src[colon + 1..semi].trim();
        let space = if to_storage {
            "storage, read".to_string()
        } else {
            src[v + 4..close].to_string()
        };
        let new_ty = if to_array {
            format!("array<{ty}>")
        } else {
            ty.to_string()
        };
        return Some(format!(
            "{}var<{space}> {name}: {new_ty}{}",
            &src[..v],
            &src[semi..]
        ));
    }
    None
}

fn offset_uses(src: &str, name: &str) -> std::result::Result<String, String> {
    let mut out = src.to_string();
    // from the last use back, so earlier positions stay valid
    for i in uses(src, name).into_iter().rev() {
        let after = i + name.len();
        let open = after + out[after..].len() - out[after..].trim_start().len();
        if out.as_bytes().get(open) != Some(&b'[') {
            return Err(format!("{name} is used other than as {name}[index]"));
        }
        let close = matching(&out, open, (b'[', b']')).ok_or(format!("unbalanced {name}["))?;
        let inner = out[open + 1..close].to_string();
        out.replace_range(open..=close, &format!("[clampnet_o_{name} + ({inner})]"));
    }
    Ok(out)
}

fn index_uses(src: &str, name: &str) -> String {
    let mut out = src.to_string();
    for i in uses(src, name).into_iter().rev() {
        out.insert_str(i + name.len(), &format!("[clampnet_o_{name}]"));
    }
    out
}

/// The entry point `entry`: the model from the grid's z, the builtins it names seen per model, and
/// each per-model binding's offset set first.
fn rewrite_entry(
    src: &str,
    entry: &str,
    plan: &[(String, u32, Rewrite, PerModel)],
) -> std::result::Result<String, String> {
    let pat = format!("fn {entry}(");
    let at = src
        .find(&pat)
        .ok_or(format!("entry point {entry} not found"))?;
    let open = at + pat.len() - 1;
    let close = matching(src, open, (b'(', b')')).ok_or("unbalanced parameters")?;
    let body = close + src[close..].find('{').ok_or("no body")?;
    let mut params = Vec::new();
    let mut lets = Vec::new();
    let mut has_wg = false;
    let mut depth = 0;
    let mut start = open + 1;
    let mut pieces = Vec::new();
    for (i, b) in src.bytes().enumerate().take(close).skip(open + 1) {
        match b {
            b'(' | b'<' => depth += 1,
            b')' | b'>' => depth -= 1,
            b',' if depth == 0 => {
                pieces.push(&src[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&src[start..close]);
    for p in pieces.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let builtin = p
            .strip_prefix("@builtin(")
            .and_then(|r| r.split_once(')'))
            .map(|(b, rest)| (b.trim(), rest.trim()));
        let Some((b, rest)) = builtin else {
            return Err(format!("{entry}: parameter {p} is not a builtin"));
        };
        let id = rest.split(':').next().unwrap_or("").trim().to_string();
        let z = "clampnet_models.gz";
        match b {
            "workgroup_id" => {
                has_wg = true;
                params.push("@builtin(workgroup_id) clampnet_wg: vec3<u32>".to_string());
                lets.push(format!(
                    "let {id} = vec3<u32>(clampnet_wg.x, clampnet_wg.y, clampnet_wg.z % {z});"
                ));
            }
            "num_workgroups" => {
                params.push("@builtin(num_workgroups) clampnet_nwg: vec3<u32>".to_string());
                lets.push(format!(
                    "let {id} = vec3<u32>(clampnet_nwg.x, clampnet_nwg.y, {z});"
                ));
            }
            // workgroups are 1 deep in z, so the invocation's z is its workgroup's
            "global_invocation_id" => {
                params.push("@builtin(global_invocation_id) clampnet_gid: vec3<u32>".to_string());
                lets.push(format!(
                    "let {id} = vec3<u32>(clampnet_gid.x, clampnet_gid.y, clampnet_gid.z % {z});"
                ));
            }
            // within the workgroup: the same for every model
            "local_invocation_index"
            | "local_invocation_id"
            | "subgroup_id"
            | "num_subgroups"
            | "subgroup_invocation_id"
            | "subgroup_size" => params.push(p.to_string()),
            other => return Err(format!("{entry}: builtin {other} is not supported")),
        }
    }
    if !has_wg {
        params.push("@builtin(workgroup_id) clampnet_wg: vec3<u32>".to_string());
    }
    let mut prologue = String::from("\n    let clampnet_m = clampnet_wg.z / clampnet_models.gz;\n");
    for (name, slot, ..) in plan {
        prologue.push_str(&format!(
            "    clampnet_o_{name} = clampnet_m * clampnet_models.stride[{}][{}];\n",
            slot / 4,
            slot % 4
        ));
    }
    for l in lets {
        prologue.push_str(&format!("    {l}\n"));
    }
    Ok(format!(
        "{}fn {entry}({}) {{{prologue}{}",
        &src[..at],
        params.join(", "),
        &src[body + 1..]
    ))
}
