//! clampnet in a page: the library's own training step (the same WGSL kernels, `Trainer`) on the
//! browser's WebGPU, driven from `web/app.js`. Every GPU wait is an await here: a buffer map completes
//! only once control is back in the browser's event loop.
//!
//! The page owns one device (opened by `open_gpu`); a `Session` is one training run on it: a config
//! (TOML or Keras JSON, else the reference model), a preset, and the data (the embedded Fashion-MNIST
//! sample, or IDX or image files dropped into the page). Errors are the command line's messages.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use clampnet::checkpoint::RunMeta;
use clampnet::config::Config;
use clampnet::data::{self, Dataset};
use clampnet::files::Source;
use clampnet::gpu::{describe, Context, GpuOptions, KernelSet};
use clampnet::model::{init_weights, ModelPlan};
use clampnet::restrict::{Preset, Restrictions};
use clampnet::trainer::{epoch_order, PassMetrics, Setup, Trainer};
use clampnet::{report, Error};
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

thread_local! {
    /// The page's device, opened once and kept for the page's life (sessions borrow it).
    static GPU: RefCell<Option<&'static Context>> = const { RefCell::new(None) };
}

fn js(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// Log records and panics go to the browser's console.
struct ConsoleLog;

impl log::Log for ConsoleLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("{}: {}", r.level(), r.args());
            match r.level() {
                log::Level::Error => web_sys::console::error_1(&line.into()),
                log::Level::Warn => web_sys::console::warn_1(&line.into()),
                _ => web_sys::console::log_1(&line.into()),
            }
        }
    }
    fn flush(&self) {}
}

#[wasm_bindgen(start)]
fn start() {
    static LOG: ConsoleLog = ConsoleLog;
    let _ = log::set_logger(&LOG).map(|()| log::set_max_level(log::LevelFilter::Info));
    std::panic::set_hook(Box::new(|p| {
        web_sys::console::error_1(&p.to_string().into())
    }));
}

/// Open the page's WebGPU device (once; later calls return the same). `kernel_set`: "auto", "cpu" or
/// "gpu". Returns `{adapter, kernel_set, max_storage_buffer_binding_size}`.
#[wasm_bindgen]
pub async fn open_gpu(kernel_set: String) -> Result<JsValue, JsValue> {
    let ctx = match GPU.with(|g| *g.borrow()) {
        Some(ctx) => ctx,
        None => {
            let opts = GpuOptions {
                kernel_set: KernelSet::parse(&kernel_set).map_err(js)?,
                ..Default::default()
            };
            let ctx: &'static Context =
                Box::leak(Box::new(Context::new_async(&opts).await.map_err(js)?));
            GPU.with(|g| *g.borrow_mut() = Some(ctx));
            ctx
        }
    };
    Ok(json!({
        "adapter": describe(&ctx.info),
        "kernel_set": ctx.kernel_set.name(),
        "max_storage_buffer_binding_size": ctx.limits.max_storage_buffer_binding_size,
    })
    .to_string()
    .into())
}

/// The presets, as `train --preset` names them, with what each restricts.
#[wasm_bindgen]
pub fn presets() -> String {
    use clap::ValueEnum;
    let list: Vec<Value> = Preset::value_variants()
        .iter()
        .filter_map(|p| p.to_possible_value())
        .map(|v| {
            json!({
                "name": v.get_name(),
                "help": v.get_help().map(|h| h.to_string()).unwrap_or_default(),
            })
        })
        .collect();
    Value::Array(list).to_string()
}

/// The example configs of `configs/`, for the page's list.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "batchnorm_gap",
        include_str!("../../configs/batchnorm_gap.toml"),
    ),
    ("clip", include_str!("../../configs/clip.toml")),
    (
        "clip_per_epoch",
        include_str!("../../configs/clip_per_epoch.toml"),
    ),
    ("combo", include_str!("../../configs/combo.toml")),
    ("l1l2", include_str!("../../configs/l1l2.toml")),
    ("max_norm", include_str!("../../configs/max_norm.toml")),
    (
        "maxnorm_dropout_sgd",
        include_str!("../../configs/maxnorm_dropout_sgd.toml"),
    ),
    ("none", include_str!("../../configs/none.toml")),
    (
        "proximal_l1",
        include_str!("../../configs/proximal_l1.toml"),
    ),
    (
        "sgd_schedule",
        include_str!("../../configs/sgd_schedule.toml"),
    ),
    ("two_conv", include_str!("../../configs/two_conv.toml")),
    ("unitnorm", include_str!("../../configs/unitnorm.toml")),
    (
        "unitnorm_keras_default",
        include_str!("../../configs/unitnorm_keras_default.toml"),
    ),
];

/// The example configs (JSON: `[{name, toml}]`).
#[wasm_bindgen]
pub fn examples() -> String {
    let list: Vec<Value> = EXAMPLES
        .iter()
        .map(|(name, toml)| json!({ "name": name, "toml": toml }))
        .collect();
    Value::Array(list).to_string()
}

/// A file the page was given: its name (its relative path for a dropped folder) and bytes.
fn files_of(list: &js_sys::Array) -> Result<Vec<(String, Vec<u8>)>, JsValue> {
    list.iter()
        .map(|f| {
            let name = js_sys::Reflect::get(&f, &"name".into())?
                .as_string()
                .unwrap_or_default();
            let bytes = js_sys::Uint8Array::new(&js_sys::Reflect::get(&f, &"bytes".into())?);
            Ok((name, bytes.to_vec()))
        })
        .collect()
}

/// The dataset of the page's files: none, the embedded sample; files under `train/<class>/`, an image
/// folder; else the four IDX files.
fn dataset(files: &[(String, Vec<u8>)], input: [usize; 3]) -> clampnet::Result<Dataset> {
    if files.is_empty() {
        data::load_embedded_sample()
    } else if files
        .iter()
        .any(|(n, _)| n.split('/').any(|p| p == "train" || p == "test"))
    {
        data::load_image_files(files, input)
    } else {
        data::load_idx_files(files, 10)
    }
}

struct Run {
    trainer: Trainer<'static>,
    cfg: Config,
    source: Option<Source>,
    preset: Option<Preset>,
    /// the epoch under way (from 1) and its next step
    epoch: usize,
    next_step: usize,
    order: Vec<u32>,
    train_n: usize,
    /// the page's limit on the training examples (None: all)
    limit_train: Option<usize>,
    class_names: Option<Vec<String>>,
}

/// One training run in the page. Its methods return promises; one runs at a time.
#[wasm_bindgen]
pub struct Session {
    run: Rc<RefCell<Run>>,
    summary: String,
}

fn busy() -> JsValue {
    js("the session is busy: wait for the running call to finish")
}

#[wasm_bindgen]
impl Session {
    /// A run of `config` (TOML, or a Keras model JSON; empty: the reference model) with `preset`
    /// (empty: the config's restrictions) on `files` (`[{name, bytes}]`; none: the embedded sample).
    /// `limit_train`: train on the first N examples (0: all). Call `open_gpu` first.
    #[wasm_bindgen(constructor)]
    pub fn new(
        config: String,
        preset: String,
        files: js_sys::Array,
        limit_train: usize,
    ) -> Result<Session, JsValue> {
        let ctx = GPU
            .with(|g| *g.borrow())
            .ok_or_else(|| js("no GPU device: open_gpu() first"))?;
        let files = files_of(&files)?;
        Self::build(ctx, &config, &preset, &files, limit_train).map_err(js)
    }

    fn build(
        ctx: &'static Context,
        text: &str,
        preset: &str,
        files: &[(String, Vec<u8>)],
        limit_train: usize,
    ) -> clampnet::Result<Session> {
        let source = match text.trim() {
            "" => None,
            t if t.starts_with('{') => Some(Source::Keras(t.to_string())),
            t => Some(Source::Toml(t.to_string())),
        };
        let mut cfg = match &source {
            Some(s) => s.parse("the config")?,
            None => Config::reference(),
        };
        let plan = ModelPlan::new(&cfg.model)?;
        let preset = match preset.trim() {
            "" => None,
            p => Some(<Preset as clap::ValueEnum>::from_str(p, true).map_err(|_| {
                Error::Config(format!("unknown preset '{p}': see the preset list"))
            })?),
        };
        if let Some(p) = preset {
            cfg.restrictions = Restrictions::preset(p, &plan);
        }
        let mut ds = dataset(files, cfg.model.input)?;
        if ds.classes != plan.classes {
            return Err(Error::Config(format!(
                "the dataset ({}) has {} classes but the model's last layer has {} units: set `units = {}` on the last dense layer of the config",
                ds.source, ds.classes, plan.classes, ds.classes
            )));
        }
        if limit_train > 0 {
            ds.train.truncate(limit_train);
        }
        let validation = match cfg.validation_split {
            Some(v) => Some(ds.train.hold_out(v)?),
            None => None,
        };
        let weights = init_weights(&plan, cfg.seed);
        let mut setup = Setup::new(
            plan.clone(),
            cfg.restrictions.clone(),
            cfg.optimizer,
            cfg.batch_size,
        );
        setup.seed = cfg.seed;
        setup.loss = cfg.loss;
        setup.validation = validation;
        setup.class_weight = cfg.class_weights(plan.classes).map_err(Error::Config)?;
        let trainer = Trainer::new(ctx, setup, &ds.train, &ds.test, &weights)?;
        let mut notes = cfg.warnings.clone();
        if cfg.early_stopping.is_some() || cfg.reduce_lr.is_some() {
            notes.push(
                "the page does not run callbacks (early_stopping, reduce_lr_on_plateau): the command line does"
                    .into(),
            );
        }
        let summary = json!({
            "parameters": plan.param_count(),
            "layers": plan.layers.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
            "data": ds.source,
            "train": ds.train.len(),
            "test": ds.test.len(),
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "steps_per_epoch": trainer.steps_per_epoch(),
            "kernel_set": trainer.kernel_set.name(),
            "restrictions": cfg.restrictions.tensors.iter()
                .map(|(n, t)| format!("{n}: {}", report::describe(t)))
                .collect::<Vec<_>>(),
            "notes": notes,
        })
        .to_string();
        let train_n = ds.train.len();
        let order = epoch_order(train_n, cfg.seed, 1, cfg.shuffle);
        Ok(Session {
            run: Rc::new(RefCell::new(Run {
                trainer,
                cfg,
                source,
                preset,
                epoch: 1,
                next_step: 0,
                order,
                train_n,
                limit_train: (limit_train > 0).then_some(limit_train),
                class_names: ds.class_names,
            })),
            summary,
        })
    }

    /// What the run trains (JSON): parameters, data, batch size, epochs, steps per epoch, restrictions.
    pub fn summary(&self) -> String {
        self.summary.clone()
    }

    /// Train up to `max_steps` more steps of the epoch under way; at the epoch's end, evaluate the test
    /// (and validation) split. Resolves to JSON: epoch, step, steps, the steps' loss and accuracy,
    /// images per second, the test metrics at an epoch's end, `done` after the last epoch.
    pub fn train(&self, max_steps: usize) -> js_sys::Promise {
        let run = self.run.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut guard = run.try_borrow_mut().map_err(|_| busy())?;
            let r = &mut *guard;
            Self::train_some(r, max_steps.max(1))
                .await
                .map(|v| JsValue::from_str(&v.to_string()))
                .map_err(js)
        })
    }

    async fn train_some(r: &mut Run, max_steps: usize) -> clampnet::Result<Value> {
        let per_epoch = r.trainer.steps_per_epoch();
        if r.epoch > r.cfg.epochs {
            return Ok(
                json!({ "done": true, "epoch": r.cfg.epochs, "step": per_epoch, "steps": per_epoch }),
            );
        }
        let end = (r.next_step + max_steps).min(per_epoch);
        let stats = r
            .trainer
            .train_range_async(r.epoch, &r.order, r.next_step, end, &|| false, &mut |_| {})
            .await?;
        let mut out = json!({
            "epoch": r.epoch,
            "epochs": r.cfg.epochs,
            "step": stats.next_step,
            "steps": per_epoch,
            "optimizer_steps": r.trainer.step,
            "loss": stats.train.loss,
            "accuracy": stats.train.accuracy,
            "images_per_second": stats.train.count as f64 / stats.train_seconds.max(1e-9),
        });
        r.next_step = stats.next_step;
        if stats.completed {
            let m = |p: PassMetrics| json!({ "loss": p.loss, "accuracy": p.accuracy });
            out["test"] = m(r.trainer.evaluate_async().await?);
            if let Some(v) = r.trainer.validate_async().await? {
                out["validation"] = m(v);
            }
            r.epoch += 1;
            r.next_step = 0;
            r.order = epoch_order(r.train_n, r.cfg.seed, r.epoch, r.cfg.shuffle);
            out["done"] = json!(r.epoch > r.cfg.epochs);
        }
        Ok(out)
    }

    /// The weights (JSON: `[{name, shape, values}]`, Keras layout).
    pub fn weights(&self) -> js_sys::Promise {
        let run = self.run.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let r = run.try_borrow().map_err(|_| busy())?;
            let w = r.trainer.weights_async().await.map_err(js)?;
            let list: Vec<Value> = w
                .into_iter()
                .map(|(name, shape, values)| json!({ "name": name, "shape": shape, "values": values }))
                .collect();
            Ok(JsValue::from_str(&Value::Array(list).to_string()))
        })
    }

    /// The restriction report: each restricted tensor's norms and range against its restriction (the
    /// table `clampnet train` prints).
    pub fn report(&self) -> js_sys::Promise {
        let run = self.run.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let r = run.try_borrow().map_err(|_| busy())?;
            let w = r.trainer.weights_async().await.map_err(js)?;
            let stats = report::restriction_report(&w, &r.cfg.restrictions);
            Ok(JsValue::from_str(&if stats.is_empty() {
                "no tensor is restricted in this run".to_string()
            } else {
                report::table(&stats)
            }))
        })
    }

    /// A checkpoint of the run as it stands, in the format `name`'s extension names (`.safetensors`,
    /// `.keras`, `.weights.h5`): the command line's `--resume` continues it.
    pub fn checkpoint(&self, name: String) -> js_sys::Promise {
        let run = self.run.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let r = run.try_borrow().map_err(|_| busy())?;
            let bytes = Self::checkpoint_bytes(&r, &name).await.map_err(js)?;
            Ok(js_sys::Uint8Array::from(&bytes[..]).into())
        })
    }

    async fn checkpoint_bytes(r: &Run, name: &str) -> clampnet::Result<Vec<u8>> {
        let t = &r.trainer;
        let tensors = t.checkpoint_tensors_async().await?;
        let cfg = &r.cfg;
        let preset = r.preset.map(|p| format!("{p:?}").to_lowercase());
        let mut meta = RunMeta {
            trained_with: Some(match (&preset, &r.source) {
                (Some(p), _) => format!("preset {p} (in the browser)"),
                (None, Some(_)) => "the page's config (in the browser)".into(),
                (None, None) => "preset none (in the browser)".into(),
            }),
            optimizer_steps: Some(t.step),
            // epochs completed, and the steps done in the next
            epoch: Some(r.epoch - 1),
            epoch_step: Some(r.next_step),
            epochs: Some(cfg.epochs),
            seed: Some(cfg.seed),
            batch_size: Some(cfg.batch_size),
            learning_rate: Some(t.optimizer.lr),
            initial_learning_rate: Some(cfg.optimizer.lr),
            shuffle: Some(cfg.shuffle),
            validation_split: cfg.validation_split,
            preset,
            limit_train: r.limit_train,
            class_names: r.class_names.clone(),
            ..Default::default()
        };
        if let Some(s) = &r.source {
            s.to_meta(&mut meta);
        }
        let (bytes, warnings) =
            clampnet::files::checkpoint_bytes(Path::new(name), &tensors, &meta, r.source.as_ref())?;
        for w in warnings {
            log::warn!("{name}: {w}");
        }
        Ok(bytes)
    }
}
