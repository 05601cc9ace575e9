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
    write_atomic(path, &serialize(path, tensors, metadata)?)
}

/// The safetensors bytes of `tensors` (plus string metadata); `path` names the file in errors.
pub fn serialize(
    path: &Path,
    tensors: &Weights,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
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
    safetensors::serialize(views, metadata).map_err(|e| Error::Checkpoint {
        path: path.into(),
        msg: format!("serializing: {e}"),
    })
}

/// Write to `.name.tmp-<pid>-<ns>` beside the target, fsync, then rename over the target: a crash leaves
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
    // unique per process and call: shards of a sweep on several hosts may write the same file
    let nanos = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{nanos}",
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

/// What a checkpoint written by `train --save` records beside its tensors (safetensors metadata,
/// strings): the run's settings and where it stopped, so that `--resume` continues exactly there; and
/// what `predict`, `eval` and `inspect` read back. Every field is optional when reading: a file written
/// by another tool has none of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMeta {
    /// "config FILE", "preset NAME" or "the checkpoint's config"
    pub trained_with: Option<String>,
    /// optimizer steps done (Keras `iterations`)
    pub optimizer_steps: Option<u64>,
    /// epochs completed
    pub epoch: Option<usize>,
    /// steps done in the next epoch (an interrupted run)
    pub epoch_step: Option<usize>,
    /// epochs the run was asked for
    pub epochs: Option<usize>,
    pub seed: Option<u64>,
    pub batch_size: Option<usize>,
    pub learning_rate: Option<f32>,
    /// the rate the run started with (--lr or the config's; `learning_rate` is the current one)
    pub initial_learning_rate: Option<f32>,
    /// the weights the run started from (--init), as given
    pub init: Option<String>,
    pub shuffle: Option<bool>,
    /// the model, restrictions and optimizer, as the TOML the run was given
    pub config_toml: Option<String>,
    /// or as the Keras model JSON it was given (a `.keras` / `.json` config)
    pub keras_config: Option<String>,
    pub preset: Option<String>,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    /// an image-folder dataset's class names
    pub class_names: Option<Vec<String>>,
    /// the fit callbacks' state (`callbacks::CallbackState`, JSON)
    pub callbacks: Option<String>,
    /// Keras' validation_split of the run
    pub validation_split: Option<f64>,
    /// Keras' class_weight of the run, "class:weight,..." (as --class-weight takes it)
    pub class_weight: Option<String>,
}

/// The `format` every checkpoint clampnet writes carries.
pub const FORMAT: &str = "clampnet-keras-v1";

impl RunMeta {
    /// The metadata to write (with `format`).
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        put("format", Some(FORMAT.into()));
        put("trained_with", self.trained_with.clone());
        put(
            "optimizer_steps",
            self.optimizer_steps.map(|v| v.to_string()),
        );
        put("epoch", self.epoch.map(|v| v.to_string()));
        put("epoch_step", self.epoch_step.map(|v| v.to_string()));
        put("epochs", self.epochs.map(|v| v.to_string()));
        put("seed", self.seed.map(|v| v.to_string()));
        put("batch_size", self.batch_size.map(|v| v.to_string()));
        put("learning_rate", self.learning_rate.map(|v| v.to_string()));
        put(
            "initial_learning_rate",
            self.initial_learning_rate.map(|v| v.to_string()),
        );
        put("init", self.init.clone());
        put("shuffle", self.shuffle.map(|v| v.to_string()));
        put("config_toml", self.config_toml.clone());
        put("keras_config", self.keras_config.clone());
        put("preset", self.preset.clone());
        put("limit_train", self.limit_train.map(|v| v.to_string()));
        put(
            "class_names",
            self.class_names
                .as_ref()
                .map(|n| serde_json::to_string(n).unwrap_or_default()),
        );
        put("limit_test", self.limit_test.map(|v| v.to_string()));
        put("callbacks", self.callbacks.clone());
        put(
            "validation_split",
            self.validation_split.map(|v| v.to_string()),
        );
        put("class_weight", self.class_weight.clone());
        m
    }

    /// The fields of `meta` clampnet knows; a missing or unreadable value is None.
    pub fn from_map(meta: &HashMap<String, String>) -> Self {
        fn num<T: std::str::FromStr>(meta: &HashMap<String, String>, k: &str) -> Option<T> {
            meta.get(k).and_then(|v| v.parse().ok())
        }
        RunMeta {
            trained_with: meta.get("trained_with").cloned(),
            optimizer_steps: num(meta, "optimizer_steps"),
            epoch: num(meta, "epoch"),
            epoch_step: num(meta, "epoch_step"),
            epochs: num(meta, "epochs"),
            seed: num(meta, "seed"),
            batch_size: num(meta, "batch_size"),
            learning_rate: num(meta, "learning_rate"),
            initial_learning_rate: num(meta, "initial_learning_rate"),
            init: meta.get("init").cloned(),
            shuffle: meta.get("shuffle").map(|v| v == "true"),
            config_toml: meta.get("config_toml").cloned(),
            keras_config: meta.get("keras_config").cloned(),
            preset: meta.get("preset").cloned(),
            limit_train: num(meta, "limit_train"),
            limit_test: num(meta, "limit_test"),
            class_names: meta
                .get("class_names")
                .and_then(|s| serde_json::from_str(s).ok()),
            callbacks: meta.get("callbacks").cloned(),
            validation_split: num(meta, "validation_split"),
            class_weight: meta.get("class_weight").cloned(),
        }
    }

    /// `value` of the key `key`, which a resumable checkpoint has; else an error naming the key.
    pub fn required<T>(path: &Path, key: &str, value: Option<T>) -> Result<T> {
        value.ok_or_else(|| Self::invalid(path, key))
    }

    /// The error of a resumed checkpoint whose metadata `key` is missing or does not fit the run.
    pub fn invalid(path: &Path, key: &str) -> Error {
        Error::Checkpoint {
            path: path.into(),
            msg: format!(
                "metadata `{key}` is missing or invalid: only checkpoints written by `clampnet train --save` can be resumed"
            ),
        }
    }
}
