//! Kernel definitions. Each op declares the entry points it dispatches as `KernelDef` statics next to
//! its recording code (`src/layers/`, `src/step/`, `src/optim/`); `step::kernels()` collects them, and
//! pipelines are built from that list, each once, on its first dispatch (`Pipelines`).

/// A WGSL shader module, embedded at build time so the binary runs from anywhere: one file under
/// shaders/, or several read as one (an optimizer's shader is the shared update prologue followed by
/// its own file).
#[derive(Debug)]
pub struct Shader {
    /// the module's name: its last file
    pub file: &'static str,
    /// the files under shaders/, in order
    pub parts: &'static [&'static str],
    /// their text, concatenated
    pub source: &'static str,
}

/// The text of shaders/subgroups.wgsl, the first file of every shader with subgroup operations.
pub const SUBGROUPS_PART: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/shaders/subgroups.wgsl"
));

impl Shader {
    /// The shader uses subgroup operations (its first file is shaders/subgroups.wgsl): it is built only
    /// on a device with the `subgroup` feature (`Context::subgroups`).
    pub fn needs_subgroups(&self) -> bool {
        self.parts.first() == Some(&"subgroups.wgsl")
    }
}

/// Declares a `Shader` of files under shaders/: `shader!("conv2d.wgsl")`, or
/// `shader!("update_prologue.wgsl", "adam.wgsl")` for one read after the other.
#[macro_export]
macro_rules! shader {
    ($($part:literal),+) => {
        $crate::gpu::Shader {
            file: $crate::shader!(@last $($part),+),
            parts: &[$($part),+],
            source: concat!($(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $part))),+),
        }
    };
    (@last $part:literal) => { $part };
    (@last $part:literal, $($rest:literal),+) => { $crate::shader!(@last $($rest),+) };
}

/// One compute entry point in one pipeline variant family.
#[derive(Debug)]
pub struct KernelDef {
    /// unique name, as `bench --kernels` and the dispatch listings print it ("Conv2dForward")
    pub name: &'static str,
    pub shader: &'static Shader,
    pub entry: &'static str,
    /// pipeline-overridable constants fixed for this kernel (`POOLED`, `DY_UNIFORM`)
    pub constants: &'static [(&'static str, f64)],
    /// the entry point has a `GATE` override (apply relu'(y) to the incoming gradient): it is built in
    /// two variants, chosen per dispatch
    pub gated: bool,
}

impl KernelDef {
    /// Pipeline-overridable constants of the variant `gate`.
    pub fn constants(&self, gate: bool) -> Vec<(&'static str, f64)> {
        let mut c = Vec::new();
        if self.gated {
            c.push(("GATE", if gate { 1.0 } else { 0.0 }));
        }
        c.extend_from_slice(self.constants);
        c
    }

    /// The variants built: (false) or (false, true) for a gated kernel.
    pub fn variants(&self) -> &'static [bool] {
        if self.gated {
            &[false, true]
        } else {
            &[false]
        }
    }
}
