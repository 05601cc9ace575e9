//! `clampnet viz`: a checkpoint's conv filter grids and weight histograms, and the training curves of a
//! `train --metrics` log (PNG files).

use std::path::PathBuf;

use clap::Args;

use clampnet::{Error, Result};

#[derive(Args)]
pub struct VizArgs {
    /// a checkpoint: .safetensors, .keras or .weights.h5 (read as the reference model)
    checkpoint: PathBuf,
    /// folder for the PNG files
    #[arg(long)]
    out: PathBuf,
    /// a `train --metrics` log, for the training curves
    #[arg(long)]
    metrics: Option<PathBuf>,
}

pub fn run(v: VizArgs) -> Result<()> {
    let (weights, _) = clampnet::files::load_checkpoint(&v.checkpoint, None)?;
    let log = match &v.metrics {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            let lines: std::result::Result<Vec<serde_json::Value>, _> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(serde_json::from_str)
                .collect();
            let lines = lines.map_err(|e| Error::Data {
                path: p.into(),
                msg: format!("not a `train --metrics` log: {e}"),
            })?;
            if lines.is_empty() {
                return Err(Error::Data {
                    path: p.into(),
                    msg: "the metrics log has no epochs".into(),
                });
            }
            Some(lines)
        }
        None => None,
    };
    for p in clampnet::viz::render(&v.out, &weights, log.as_deref())? {
        println!("{}", p.display());
    }
    Ok(())
}
