//! Keras files in and out (`src/keras/`, `src/files.rs`), end to end through the binary:
//! - the `.keras` fixtures made by real Keras (tools/make_keras_file_fixtures.py) train 3 steps via the
//!   CLI, with the optimizer and loss read from the file, to Keras' weights and losses within 2e-5;
//! - the same from the model's JSON with the weights from `--init` (.keras or .weights.h5);
//! - clampnet's own `.keras` / `.weights.h5` read back bit-identical (tensors, Adam's state, settings),
//!   and a run resumed from a `.keras` checkpoint equals an uninterrupted one bit for bit;
//! - bad files and what clampnet cannot train are refused with the layer and the thing named.
//!
//! Keras' side of the round trip (Keras loading clampnet's files) is tools/keras_roundtrip.py.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clampnet::files::{self, Format, Source};
use clampnet::keras::{self, archive, h5};
use clampnet::model::ModelPlan;
use serde_json::{json, Value};

/// Every fixture tools/make_keras_file_fixtures.py made.
const MODELS: [&str; 17] = [
    "reference_l1l2",
    "two_conv",
    "clip_decay",
    "dense_clipvalue",
    "sgd_nesterov_exponential",
    "sgd_piecewise",
    "rmsprop_centered_cosine",
    "rmsprop_inverse_time",
    "adamw_cosine",
    "dropout_injected",
    "categorical_smoothing",
    "sparse_from_logits",
    "activation_layers",
    "layer_activations",
    "class_weighted",
    "strided_batchnorm",
    "batchnorm_sgd",
];

/// The fit() arguments a fixture was trained with, which a .keras file does not hold.
fn fit_args(name: &str) -> &'static [&'static str] {
    match name {
        "class_weighted" => &["--class-weight", "0:2,3:0.5,7:3"],
        _ => &[],
    }
}

fn clampnet(args: &[&str]) -> Output {
    let _gpu = common::gpu().1;
    Command::new(env!("CARGO_BIN_EXE_clampnet"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "clampnet failed: {e}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn fails_with(o: &Output, needles: &[&str]) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}: {e}");
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clampnet-keras-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn keras_fixture(name: &str) -> PathBuf {
    common::fixture(&format!("keras/{name}.keras"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Keras' 3 steps: batch 8 of the first 8 training images, one step per epoch, no shuffling.
fn train_3_steps(config: &Path, extra: &[&str], save: &Path) -> Vec<f64> {
    let mut args = vec![
        "train",
        "--config",
        s(config),
        "--limit-train",
        "8",
        "--limit-test",
        "8",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--no-shuffle",
        "--json",
        "--quiet",
        "--save",
        s(save),
    ];
    args.extend_from_slice(extra);
    ok(&clampnet(&args))
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["train_loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn assert_matches_keras(name: &str, saved: &Path, losses: &[f64]) {
    let expected = common::load(&format!("keras/{name}.expected.safetensors"));
    let (got, _) = files::load_checkpoint(saved, None).unwrap();
    let mut compared = 0;
    for (tensor, (shape, want)) in &expected {
        if tensor == "losses" {
            let l: Vec<f32> = losses.iter().map(|&v| v as f32).collect();
            common::assert_close(&format!("{name} losses"), &l, want, 2e-5, 0.0);
            continue;
        }
        let t = got
            .iter()
            .find(|t| t.0 == *tensor)
            .unwrap_or_else(|| panic!("{name}: no tensor {tensor}"));
        assert_eq!(&t.1, shape, "{name} {tensor} shape");
        common::assert_close(&format!("{name} {tensor}"), &t.2, want, 2e-5, 0.0);
        compared += 1;
    }
    assert!(compared >= 4, "{name}: compared {compared} tensors");
}

#[test]
fn keras_models_train_3_steps_via_the_cli_to_keras_weights() {
    let d = tempdir("parity");
    for name in MODELS {
        let out = d.join(format!("{name}.safetensors"));
        let losses = train_3_steps(&keras_fixture(name), fit_args(name), &out);
        assert_eq!(losses.len(), 3);
        assert_matches_keras(name, &out, &losses);
    }
}

#[test]
fn keras_json_with_weights_from_init_trains_the_same() {
    let d = tempdir("json");
    let name = "two_conv";
    let bytes = std::fs::read(keras_fixture(name)).unwrap();
    let a = archive::read(&bytes).unwrap();
    let json = d.join("two_conv.json");
    std::fs::write(&json, &a.config).unwrap();
    // --init from the .keras file
    let out = d.join("from_keras.safetensors");
    let losses = train_3_steps(&json, &["--init", s(&keras_fixture(name))], &out);
    assert_matches_keras(name, &out, &losses);
    // --init from Keras' weights file, made by convert
    let h5 = d.join("two_conv.weights.h5");
    ok(&clampnet(&["convert", s(&keras_fixture(name)), s(&h5)]));
    let out = d.join("from_h5.safetensors");
    let losses = train_3_steps(&json, &["--init", s(&h5)], &out);
    assert_matches_keras(name, &out, &losses);
}

/// Every fixture's config, written back by clampnet and read again, is the same model, restrictions
/// and optimizer; names survive.
#[test]
fn keras_configs_survive_clampnets_writer() {
    for name in MODELS {
        let a = archive::read(&std::fs::read(keras_fixture(name)).unwrap()).unwrap();
        let m = keras::parse_model(&a.config).unwrap();
        assert!(m.compiled, "{name}");
        let mut warnings = Vec::new();
        let back = keras::model_json(&m.config, &m.name, &mut warnings).unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        let again = keras::parse_model(&back.to_string()).unwrap();
        assert_eq!(again.name, m.name);
        assert_eq!(again.config.model, m.config.model, "{name}");
        assert_eq!(again.config.restrictions, m.config.restrictions, "{name}");
        assert_eq!(again.config.optimizer, m.config.optimizer, "{name}");
    }
    // names: the plan's tensor names are <keras layer name>.<variable>; the weights file's groups are
    // Keras' class-based paths
    let a = archive::read(&std::fs::read(keras_fixture("two_conv")).unwrap()).unwrap();
    let m = keras::parse_model(&a.config).unwrap();
    let plan = ModelPlan::new(&m.config.model).unwrap();
    let names: Vec<&str> = plan.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "features.kernel",
            "features.bias",
            "mixer.kernel",
            "mixer.bias",
            "hidden.kernel",
            "hidden.bias",
            "probs.kernel",
            "probs.bias"
        ]
    );
    assert_eq!(
        h5::layer_paths(&plan),
        [
            "conv2d",
            "max_pooling2d",
            "conv2d_1",
            "max_pooling2d_1",
            "flatten",
            "dense",
            "dense_1"
        ]
    );
    // the reference model keeps its names
    let plan = ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
    let names: Vec<&str> = plan.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["conv2d.kernel", "conv2d.bias", "dense.kernel", "dense.bias"]
    );
}

/// A checkpoint through .keras and .weights.h5 and back: every tensor (weights and Adam's moments)
/// bit-identical, the run's settings kept; and a run resumed from its .keras checkpoint ends
/// bit-identical to one that never stopped.
#[test]
fn clampnets_keras_files_read_back_bit_identical_and_resume() {
    let d = tempdir("roundtrip");
    let cfg = keras_fixture("two_conv");
    let common = [
        "--limit-train",
        "96",
        "--limit-test",
        "16",
        "--batch-size",
        "16",
        "--quiet",
    ];
    let straight = d.join("straight.safetensors");
    let mut a = vec![
        "train",
        "--config",
        s(&cfg),
        "--epochs",
        "2",
        "--save",
        s(&straight),
    ];
    a.extend_from_slice(&common);
    ok(&clampnet(&a));
    let half = d.join("half.keras");
    let mut a = vec![
        "train",
        "--config",
        s(&cfg),
        "--epochs",
        "1",
        "--save",
        s(&half),
    ];
    a.extend_from_slice(&common);
    ok(&clampnet(&a));
    assert_eq!(Format::of(&half), Format::Keras);

    // .keras -> .safetensors -> .keras -> .weights.h5 -> .safetensors: the same tensors, bit for bit
    let (t0, m0) = files::load_checkpoint(&half, None).unwrap();
    assert_eq!(t0.len(), 8 * 3, "weights and both Adam moments");
    let st = d.join("half.safetensors");
    ok(&clampnet(&["convert", s(&half), s(&st)]));
    let k2 = d.join("again.keras");
    ok(&clampnet(&["convert", s(&st), s(&k2)]));
    let w = d.join("again.weights.h5");
    ok(&clampnet(&["convert", s(&k2), s(&w)]));
    let json = d.join("model.json");
    std::fs::write(
        &json,
        archive::read(&std::fs::read(&half).unwrap())
            .unwrap()
            .config,
    )
    .unwrap();
    let st2 = d.join("again.safetensors");
    ok(&clampnet(&[
        "convert",
        s(&w),
        s(&st2),
        "--config",
        s(&json),
    ]));
    let bits = |t: &clampnet::checkpoint::Weights| -> Vec<(String, Vec<usize>, Vec<u32>)> {
        let mut v: Vec<_> = t
            .iter()
            .map(|(n, s, x)| {
                (
                    n.clone(),
                    s.clone(),
                    x.iter().map(|f| f.to_bits()).collect(),
                )
            })
            .collect();
        v.sort();
        v
    };
    for p in [&st, &k2, &st2] {
        let (t, m) = files::load_checkpoint(p, None).unwrap();
        assert_eq!(bits(&t), bits(&t0), "{}", p.display());
        assert_eq!(m.optimizer_steps, m0.optimizer_steps, "{}", p.display());
    }
    let (_, m2) = files::load_checkpoint(&k2, None).unwrap();
    assert_eq!(m2.epoch, Some(1));
    assert_eq!(m2.batch_size, Some(16));

    // resume from the .keras checkpoint
    let resumed = d.join("resumed.safetensors");
    ok(&clampnet(&[
        "train",
        "--resume",
        s(&half),
        "--epochs",
        "2",
        "--quiet",
        "--save",
        s(&resumed),
    ]));
    let (a, _) = files::load_checkpoint(&straight, None).unwrap();
    let (b, _) = files::load_checkpoint(&resumed, None).unwrap();
    assert_eq!(bits(&a), bits(&b), "resumed from .keras vs uninterrupted");
}

/// A TOML model saved as .keras: Keras' JSON of it, and clampnet reads it back as the same model.
#[test]
fn toml_models_save_as_keras() {
    let d = tempdir("toml");
    let out = d.join("two.keras");
    ok(&clampnet(&[
        "train",
        "--config",
        "configs/two_conv.toml",
        "--epochs",
        "1",
        "--limit-train",
        "64",
        "--limit-test",
        "16",
        "--quiet",
        "--save",
        s(&out),
    ]));
    let a = archive::read(&std::fs::read(&out).unwrap()).unwrap();
    let m = keras::parse_model(&a.config).unwrap();
    let toml = Source::Toml(std::fs::read_to_string("configs/two_conv.toml").unwrap())
        .parse("two_conv.toml")
        .unwrap();
    assert_eq!(m.config.model.layers, toml.model.layers);
    assert_eq!(m.config.restrictions, toml.restrictions);
    let meta: Value = serde_json::from_str(a.metadata.as_deref().unwrap()).unwrap();
    assert_eq!(meta["keras_version"], json!(keras::KERAS_VERSION));
    assert!(
        meta["clampnet"]["config_toml"].is_string(),
        "the TOML rides along"
    );
    // predict reads the .keras file
    let png = d.join("x.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([120]))
        .save(&png)
        .unwrap();
    let o = ok(&clampnet(&["predict", s(&out), s(&png), "--json"]));
    assert!(o.contains("probability"), "{o}");
}

fn fixture_parts(name: &str) -> (Value, Vec<u8>) {
    let a = archive::read(&std::fs::read(keras_fixture(name)).unwrap()).unwrap();
    (serde_json::from_str(&a.config).unwrap(), a.weights.unwrap())
}

fn parse_err(v: &Value) -> String {
    keras::parse_model(&v.to_string()).unwrap_err()
}

#[test]
fn what_clampnet_cannot_train_is_refused_by_name() {
    let (v, _) = fixture_parts("two_conv");
    let layer = |i: usize| format!("/config/layers/{i}/config");
    // an unknown layer class
    let mut x = v.clone();
    x["config"]["layers"][2]["class_name"] = json!("SpatialDropout2D");
    let e = parse_err(&x);
    assert!(
        e.contains("'pool_a' (SpatialDropout2D)")
            && e.contains("Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D")
            && e.contains("BatchNormalization"),
        "{e}"
    );
    // non-square strides, a dilation
    let mut x = v.clone();
    x.pointer_mut(&layer(1)).unwrap()["strides"] = json!([2, 1]);
    let e = parse_err(&x);
    assert!(
        e.contains("'features' (Conv2D)") && e.contains("strides") && e.contains("square"),
        "{e}"
    );
    let mut x = v.clone();
    x.pointer_mut(&layer(1)).unwrap()["dilation_rate"] = json!([2, 2]);
    let e = parse_err(&x);
    assert!(
        e.contains("'features' (Conv2D)") && e.contains("dilation_rate"),
        "{e}"
    );
    // an activation
    let mut x = v.clone();
    x.pointer_mut(&layer(6)).unwrap()["activation"] = json!("gelu");
    let e = parse_err(&x);
    assert!(
        e.contains("'hidden'") && e.contains("gelu") && e.contains("relu"),
        "{e}"
    );
    // a constraint class and a custom object
    let mut x = v.clone();
    x.pointer_mut(&layer(1)).unwrap()["kernel_constraint"] = json!({"module": "keras.constraints", "class_name": "Orthogonal", "config": {}, "registered_name": null});
    let e = parse_err(&x);
    assert!(
        e.contains("kernel_constraint") && e.contains("Orthogonal") && e.contains("MaxNorm"),
        "{e}"
    );
    let mut x = v.clone();
    x.pointer_mut(&layer(1)).unwrap()["kernel_regularizer"] =
        json!({"module": "my", "class_name": "Mine", "config": {}, "registered_name": "my>Mine"});
    let e = parse_err(&x);
    assert!(e.contains("my>Mine") && e.contains("custom object"), "{e}");
    // an optimizer, a schedule, a loss
    let mut x = v.clone();
    x["compile_config"]["optimizer"]["class_name"] = json!("Adagrad");
    let e = parse_err(&x);
    assert!(
        e.contains("Adagrad") && e.contains("Adam, AdamW, SGD, RMSprop"),
        "{e}"
    );
    // another optimizer's setting
    let mut x = v.clone();
    x["compile_config"]["optimizer"]["class_name"] = json!("SGD");
    let e = parse_err(&x);
    assert!(e.contains("SGD") && e.contains("beta_1"), "{e}");
    let mut x = v.clone();
    x["compile_config"]["optimizer"]["config"]["learning_rate"] =
        json!({"class_name": "PolynomialDecay", "config": {}});
    let e = parse_err(&x);
    assert!(
        e.contains("PolynomialDecay") && e.contains("CosineDecay"),
        "{e}"
    );
    // a setting out of range, a schedule with a value missing
    let mut x = v.clone();
    x["compile_config"]["optimizer"]["config"]["beta_1"] = json!(1.5);
    assert!(parse_err(&x).contains("beta_1"), "{}", parse_err(&x));
    let (mut s, _) = fixture_parts("sgd_piecewise");
    s["compile_config"]["optimizer"]["config"]["learning_rate"]["config"]["values"] = json!([0.1]);
    assert!(parse_err(&s).contains("piecewise"), "{}", parse_err(&s));
    let mut x = v.clone();
    x["compile_config"]["loss"] = json!("binary_crossentropy");
    let e = parse_err(&x);
    assert!(
        e.contains("binary_crossentropy")
            && e.contains("sparse_categorical_crossentropy, categorical_crossentropy"),
        "{e}"
    );
    // a loss that does not fit the last layer (Keras' double-softmax pitfall), label smoothing on
    // the sparse loss
    let mut x = v.clone();
    x["compile_config"]["loss"] =
        json!({"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}});
    let e = parse_err(&x);
    assert!(
        e.contains("from_logits") && e.contains("softmax twice"),
        "{e}"
    );
    let (mut f, _) = fixture_parts("sparse_from_logits");
    f["compile_config"]["loss"] = json!("sparse_categorical_crossentropy");
    let e = parse_err(&f);
    assert!(
        e.contains("linear") && e.contains("from_logits = true"),
        "{e}"
    );
    // frozen layers, other dtypes, amsgrad
    let mut x = v.clone();
    x.pointer_mut(&layer(3)).unwrap()["trainable"] = json!(false);
    assert!(parse_err(&x).contains("frozen"));
    let mut x = v.clone();
    x.pointer_mut(&layer(3)).unwrap()["dtype"] = json!("mixed_float16");
    assert!(parse_err(&x).contains("mixed_float16"));
    let mut x = v.clone();
    x["compile_config"]["optimizer"]["config"]["amsgrad"] = json!(true);
    assert!(parse_err(&x).contains("amsgrad"));
    // not a model at all
    assert!(keras::parse_model("{\"x\": 1}")
        .unwrap_err()
        .contains("config"));
    assert!(keras::parse_model("not json").unwrap_err().contains("JSON"));
    // a Functional model that is not a chain
    let (mut f, _) = fixture_parts("clip_decay");
    f["config"]["layers"][3]["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] =
        json!("conv2d");
    assert!(parse_err(&f).contains("chain"), "{}", parse_err(&f));
}

#[test]
fn bad_files_get_clear_errors() {
    let d = tempdir("bad");
    let (v, weights) = fixture_parts("two_conv");
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let train = |cfg: &Path| {
        clampnet(&[
            "train",
            "--config",
            s(cfg),
            "--epochs",
            "1",
            "--limit-train",
            "8",
        ])
    };
    // not a zip
    let p = write("text.keras", b"hello, this is not a zip file");
    fails_with(&train(&p), &["text.keras", "not a zip"]);
    // a zip without config.json
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    z.start_file("other.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut z, b"x").unwrap();
    let p = write("noconfig.keras", &z.finish().unwrap().into_inner());
    fails_with(&train(&p), &["noconfig.keras", "no config.json"]);
    // a truncated .keras
    let full = std::fs::read(keras_fixture("two_conv")).unwrap();
    let p = write("cut.keras", &full[..full.len() / 2]);
    fails_with(&train(&p), &["cut.keras", "truncated"]);
    // an unknown class_name
    let mut x = v.clone();
    x["config"]["layers"][5]["class_name"] = json!("GlobalAveragePooling1D");
    let p = write(
        "unknown.keras",
        &archive::write(&x.to_string(), &weights, None).unwrap(),
    );
    fails_with(
        &train(&p),
        &[
            "unknown.keras",
            "'flat' (GlobalAveragePooling1D)",
            "not supported",
        ],
    );
    // weights whose shapes do not match the config
    let mut x = v.clone();
    x.pointer_mut("/config/layers/1/config").unwrap()["filters"] = json!(9);
    let p = write(
        "shapes.keras",
        &archive::write(&x.to_string(), &weights, None).unwrap(),
    );
    fails_with(
        &train(&p),
        &[
            "shapes.keras",
            "features.kernel",
            "[3, 3, 1, 8]",
            "[3, 3, 1, 9]",
        ],
    );
    // a truncated .h5, as --init and inside a .keras
    let p = write("cut.weights.h5", &weights[..weights.len() / 3]);
    let json = write("m.json", v.to_string().as_bytes());
    fails_with(
        &clampnet(&[
            "train",
            "--config",
            s(&json),
            "--init",
            s(&p),
            "--epochs",
            "1",
        ]),
        &["cut.weights.h5", "truncated"],
    );
    let p = write(
        "cuth5.keras",
        &archive::write(&v.to_string(), &weights[..weights.len() / 3], None).unwrap(),
    );
    fails_with(
        &train(&p),
        &["cuth5.keras", "model.weights.h5", "truncated"],
    );
    // not HDF5 at all, and a weights file for another model
    let p = write("text.weights.h5", b"plain text");
    fails_with(
        &clampnet(&[
            "train",
            "--config",
            s(&json),
            "--init",
            s(&p),
            "--epochs",
            "1",
        ]),
        &["text.weights.h5", "not an HDF5 file"],
    );
    let (_, other) = fixture_parts("dense_clipvalue");
    let p = write("other.weights.h5", &other);
    fails_with(
        &clampnet(&[
            "train",
            "--config",
            s(&json),
            "--init",
            s(&p),
            "--epochs",
            "1",
        ]),
        &["other.weights.h5", "layer"],
    );
    // weights files hold no architecture
    fails_with(
        &clampnet(&["predict", s(&p), s(&p)]),
        &["no architecture", "convert"],
    );
    fails_with(&train(&p), &["no architecture"]);
    // convert refuses formats without weights
    fails_with(
        &clampnet(&["convert", s(&keras_fixture("two_conv")), s(&json)]),
        &["holds no weights"],
    );
}

/// The h5 reader on corrupted bytes: errors, never a panic (the fuzz target `keras` goes further).
#[test]
fn corrupted_weights_files_never_panic() {
    let (v, weights) = fixture_parts("two_conv");
    let m = keras::parse_model(&v.to_string()).unwrap();
    let plan = ModelPlan::new(&m.config.model).unwrap();
    assert!(h5::read_weights(weights.clone(), &plan).is_ok());
    let mut rng = common::TestRng::new(7);
    for i in 0..300 {
        let mut b = weights.clone();
        match i % 3 {
            0 => b.truncate(rng.next_u32() as usize % b.len()),
            _ => {
                for _ in 0..1 + i % 8 {
                    let at = rng.next_u32() as usize % b.len().min(4096);
                    b[at] ^= 1 << (rng.next_u32() % 8);
                }
            }
        }
        let _ = h5::read_weights(b.clone(), &plan);
        let _ = h5::read_optimizer(b, &plan, h5::OptimizerLayout::of(&m.config.optimizer));
    }
}

/// Every shipped TOML config as Keras JSON and back: the same model, restrictions and optimizer, or a
/// warning that names what Keras cannot hold (proximal L1, a per-epoch clip).
#[test]
fn shipped_configs_survive_the_keras_json() {
    let mut seen = 0;
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        let cfg = files::load_config(&path).unwrap().config;
        let mut warnings = Vec::new();
        let json = keras::model_json(&cfg, "sequential", &mut warnings).unwrap();
        let back = keras::parse_model(&json.to_string()).unwrap().config;
        assert_eq!(back.model.layers, cfg.model.layers, "{}", path.display());
        assert_eq!(back.optimizer, cfg.optimizer, "{}", path.display());
        if warnings.is_empty() {
            assert_eq!(back.restrictions, cfg.restrictions, "{}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 7, "{seen} configs");
}
