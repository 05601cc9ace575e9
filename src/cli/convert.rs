//! `clampnet convert IN OUT`: a model from one of clampnet's checkpoint formats to another, by extension
//! (.safetensors, .keras, .weights.h5): the weights, Adam's state and the run's settings, as far as the
//! output format holds them.

use std::path::PathBuf;

use clap::Args;

use clampnet::files::{self, Format, Source};
use clampnet::{Error, Result};

#[derive(Args)]
pub struct ConvertArgs {
    /// .safetensors, .keras or .weights.h5
    input: PathBuf,
    /// .safetensors, .keras or .weights.h5 (written atomically)
    output: PathBuf,
    /// The architecture of a .weights.h5 input, or to write a .safetensors input's weights as: a .toml, a
    /// Keras .json or a .keras file [default: the input's own, else the reference model]
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    for p in [&a.input, &a.output] {
        if matches!(Format::of(p), Format::KerasJson | Format::Toml) {
            return Err(Error::Config(format!(
                "{}: convert reads and writes .safetensors, .keras and .weights.h5 files (a .json or .toml holds no weights)",
                p.display()
            )));
        }
    }
    let given = match &a.config {
        Some(p) => Some(files::load_config(p)?.source),
        None => None,
    };
    let (tensors, mut meta) = files::load_checkpoint(&a.input, given.as_ref())?;
    let source = given.or_else(|| Source::from_meta(&meta));
    if let Some(s) = &source {
        meta.config_toml = None;
        meta.keras_config = None;
        s.to_meta(&mut meta);
    }
    for w in files::save_checkpoint(&a.output, &tensors, &meta, source.as_ref())? {
        log::warn!("{}: {w}", a.output.display());
    }
    let model = tensors
        .iter()
        .filter(|t| !t.0.starts_with("optimizer/"))
        .count();
    let optimizer = tensors.len() - model;
    eprintln!(
        "wrote {} ({model} tensors{})",
        a.output.display(),
        if optimizer > 0 {
            format!(", with Adam's state ({optimizer} tensors)")
        } else {
            String::new()
        }
    );
    Ok(())
}
