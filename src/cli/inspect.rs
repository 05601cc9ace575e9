//! `clampnet inspect`: per-tensor statistics of a checkpoint (max |w|, exact zeros, filter norms).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use clampnet::Result;

#[derive(Args)]
pub struct InspectArgs {
    /// a checkpoint: .safetensors, .keras or .weights.h5 (read as the reference model)
    file: PathBuf,
    /// {"tensors": [{"name", "shape", "max_abs", "zero_fraction", "filter_norm_min", "filter_norm_max"}]}
    #[arg(long)]
    json: bool,
}

pub fn run(a: InspectArgs) -> Result<()> {
    let (weights, meta) = clampnet::files::load_checkpoint(&a.file, None)?;
    // the model's tensors (a `train --save` checkpoint also holds the optimizer's state under optimizer/)
    let stats: Vec<_> = weights
        .iter()
        .filter(|(n, _, _)| !n.starts_with("optimizer/"))
        .map(|(n, s, w)| clampnet::report::tensor_stats(n, s, w))
        .collect();
    if a.json {
        println!("{}", json!({ "tensors": stats }));
        return Ok(());
    }
    if let Some(t) = &meta.trained_with {
        println!(
            "{}: trained with {t}, {} optimizer steps",
            a.file.display(),
            meta.optimizer_steps.map_or("?".into(), |s| s.to_string())
        );
    }
    print!("{}", clampnet::report::table(&stats));
    Ok(())
}
