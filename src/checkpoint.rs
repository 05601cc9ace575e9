//! Checkpoints in safetensors, f32, Keras names and layouts ("conv2d.kernel" (kh, kw, in, out),
//! "dense.kernel" (in, out) with rows in NHWC flatten order, biases (out,)), so a file loads into Keras with
//! `set_weights` unchanged. Written atomically: a temporary file in the same folder, fsync, rename.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::model::ModelPlan;

/// Named tensors in Keras layout.
pub type Weights = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Serialize `tensors` (plus string metadata) and write them atomically to `path`.
pub fn save(
    path: &Path,
    tensors: &Weights,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| bytemuck::cast_slice(v).to_vec())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Checkpoint {
                    path: path.into(),
                    msg: format!("tensor {name}: {e}"),
                })
        })
        .collect::<Result<_>>()?;
    let data = safetensors::serialize(views, metadata).map_err(|e| Error::Checkpoint {
        path: path.into(),
        msg: format!("serializing: {e}"),
    })?;
    write_atomic(path, &data)
}

/// Write to `path.tmp-<pid>` beside the target, fsync, then rename over the target: a crash leaves
/// either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::Checkpoint {
        path: path.into(),
        msg: "not a file path".into(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Read every f32 tensor of a safetensors file.
pub fn load(path: &Path) -> Result<(Weights, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

/// Read every f32 tensor of safetensors `bytes` (`path` names the file in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Weights, HashMap<String, String>)> {
    let err = |msg: String| Error::Checkpoint {
        path: path.into(),
        msg,
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        err(format!(
            "not a readable safetensors file ({e}); was it truncated or written by another tool?"
        ))
    })?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        err(format!(
            "not a readable safetensors file ({e}); was it truncated or written by another tool?"
        ))
    })?;
    let mut out = Vec::new();
    let mut names = st.names();
    names.sort();
    for name in names {
        let t = st
            .tensor(name)
            .map_err(|e| err(format!("tensor {name}: {e}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(err(format!(
                "tensor {name} has dtype {:?}, expected F32",
                t.dtype()
            )));
        }
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
        out.push((name.to_string(), t.shape().to_vec(), values));
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Order `weights` as the model's parameter table, rejecting missing, extra or mis-shaped tensors.
pub fn match_model(path: &Path, weights: &Weights, model: &ModelPlan) -> Result<Vec<Vec<f32>>> {
    let mut problems = Vec::new();
    let mut ordered = Vec::new();
    for p in &model.params {
        match weights.iter().find(|(n, _, _)| *n == p.name) {
            None => problems.push(format!("missing tensor {} (shape {:?})", p.name, p.shape)),
            Some((_, shape, v)) if *shape != p.shape => {
                problems.push(format!(
                    "tensor {} has shape {:?}, the model needs {:?}",
                    p.name, shape, p.shape
                ));
                ordered.push(v.clone());
            }
            Some((_, _, v)) => ordered.push(v.clone()),
        }
    }
    for (n, _, _) in weights {
        // a checkpoint written by `train --save` also holds Adam's state, which is not a model weight
        if model.param(n).is_none() && !n.starts_with("optimizer/") {
            problems.push(format!("unexpected tensor {n}"));
        }
    }
    if problems.is_empty() {
        Ok(ordered)
    } else {
        let names: Vec<String> = model
            .params
            .iter()
            .map(|p| format!("{} {:?}", p.name, p.shape))
            .collect();
        Err(Error::Checkpoint {
            path: path.into(),
            msg: format!(
                "does not match the model: {}. The model expects: {}",
                problems.join("; "),
                names.join(", ")
            ),
        })
    }
}
