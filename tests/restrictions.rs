//! Every restriction against Keras (tools/make_keras_restriction_fixtures.py): each constraint with the
//! default and per-filter axes, regularizers on kernels and biases, weight decay, the three gradient
//! clippings — each case run from the clampnet TOML config that the fixture stores beside Keras' weights,
//! on the GPU trainer and on the CPU twin. Then the shipped configs through the CLI, proximal L1 against
//! plain L1, `inspect`, and config errors.

mod common;

use std::process::Command;

use clampnet::config::Config;
use clampnet::data::Split;
use clampnet::model::ModelPlan;
use clampnet::reference as r;
use clampnet::trainer::{epoch_order, Setup, Trainer};
use common::*;

const NAMES: [&str; 4] = ["conv2d.kernel", "conv2d.bias", "dense.kernel", "dense.bias"];

#[test]
fn every_restriction_matches_keras_on_gpu_and_twin() {
    let (ctx, _g) = gpu();
    let (tensors, meta) =
        clampnet::checkpoint::load(&fixture("keras_restrictions.safetensors")).unwrap();
    let t: std::collections::HashMap<String, Vec<f32>> =
        tensors.into_iter().map(|(n, _, v)| (n, v)).collect();
    let images: Vec<u8> = t["images"].iter().map(|&v| v as u8).collect();
    let labels: Vec<u32> = t["y"].iter().map(|&v| v as u32).collect();
    let data = Split {
        images,
        labels,
        height: 10,
        width: 10,
        channels: 1,
    };
    let x: Vec<f32> = data.images.iter().map(|&p| p as f32 / 255.0).collect();
    let init: Vec<Vec<f32>> = NAMES
        .iter()
        .map(|n| t[&format!("init/{n}")].clone())
        .collect();
    let mut cases: Vec<&String> = meta.keys().filter(|k| k.starts_with("config/")).collect();
    cases.sort();
    assert_eq!(cases.len(), 14, "{cases:?}");
    for key in cases {
        let case = key.trim_start_matches("config/");
        let cfg = Config::parse(&meta[key]).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            cfg.warnings.is_empty(),
            !case.ends_with("default_axis"),
            "{case}: warnings {:?}",
            cfg.warnings
        );
        let plan = ModelPlan::new(&cfg.model).unwrap();
        let mut trainer = Trainer::new(
            ctx,
            Setup::new(plan.clone(), cfg.restrictions.clone(), cfg.optimizer, 8),
            &data,
            &data,
            &init,
        )
        .unwrap();
        let mut w = init.clone();
        let sizes: Vec<usize> = init.iter().map(|t| t.len()).collect();
        let mut slots = r::zero_slots(&cfg.optimizer, &sizes);
        let mut losses = Vec::new();
        for step in 1..=3u64 {
            let s = trainer
                .train_epoch(step as usize, &epoch_order(8, 0, 1, false), &mut |_| {})
                .unwrap();
            losses.push(s.train.loss as f32);
            let twin_loss = r::reference_step(
                &plan,
                &cfg.restrictions,
                (&cfg.optimizer, &Default::default()),
                &mut w,
                &mut slots,
                (step, 0),
                &x,
                &data.labels,
            );
            assert_close64(
                &format!("{case} twin loss {step}"),
                &[twin_loss],
                &[t[&format!("{case}/losses")][step as usize - 1] as f64],
                1e-5,
                1e-5,
            );
            if step == 1 || step == 3 {
                for (i, (name, _, got)) in trainer.weights().unwrap().into_iter().enumerate() {
                    let want = &t[&format!("{case}/step{step}/{name}")];
                    assert_close(
                        &format!("{case} step {step} {name} (GPU)"),
                        &got,
                        want,
                        2e-5,
                        1e-5,
                    );
                    assert_close(
                        &format!("{case} step {step} {name} (twin)"),
                        &w[i],
                        want,
                        2e-5,
                        1e-5,
                    );
                }
            }
        }
        assert_close(
            &format!("{case} losses"),
            &losses,
            &t[&format!("{case}/losses")],
            1e-5,
            1e-5,
        );
    }
}

fn clampnet_cli(args: &[&str]) -> std::process::Output {
    let _g = gpu().1;
    Command::new(env!("CARGO_BIN_EXE_clampnet"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn config(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("clampnet-restrictions-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn shipped_configs_for_the_tutorials_clip_loop_and_keras_default_unit_norm_match_keras() {
    // the seed tutorial's clip_weights loop: one epoch of 3 steps, then clip kernel and bias to [-1, 1]
    let out = tmp("clip_per_epoch.safetensors");
    let hot = fixture("keras_hot_init.safetensors");
    let o = clampnet_cli(&[
        "train",
        "--config",
        &config("clip_per_epoch.toml"),
        "--init",
        hot.to_str().unwrap(),
        "--lr",
        "0.01",
        "--limit-train",
        "24",
        "--limit-test",
        "8",
        "--batch-size",
        "8",
        "--no-shuffle",
        "--epochs",
        "1",
        "--quiet",
        "--save",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let k = load("keras_clip_per_epoch.safetensors");
    let got: Vec<_> = clampnet::checkpoint::load(&out)
        .unwrap()
        .0
        .into_iter()
        .filter(|t| !t.0.starts_with("optimizer/"))
        .collect();
    for (n, _, w) in &got {
        assert_close(
            &format!("clip per epoch {n}"),
            w,
            &k[&format!("step3/{n}")].1,
            2e-5,
            1e-5,
        );
    }
    let conv = &got.iter().find(|t| t.0 == "conv2d.kernel").unwrap().2;
    assert_eq!(
        conv.iter().fold(0f32, |a, v| a.max(v.abs())),
        1.0,
        "the epoch-end clip bound"
    );

    // Keras' UnitNorm() default axis 0 on a conv kernel: matches Keras, warns, filters end with squared norm 3
    let out = tmp("unitnorm_default.safetensors");
    let init = fixture("keras_init.safetensors");
    let o = clampnet_cli(&[
        "train",
        "--config",
        &config("unitnorm_keras_default.toml"),
        "--init",
        init.to_str().unwrap(),
        "--limit-train",
        "8",
        "--limit-test",
        "8",
        "--batch-size",
        "8",
        "--no-shuffle",
        "--epochs",
        "3",
        "--quiet",
        "--save",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("default axis = 0") && stderr.contains("axis = [0, 1, 2]"),
        "the warning: {stderr}"
    );
    let k = load("keras_unitnorm_default.safetensors");
    let got: Vec<_> = clampnet::checkpoint::load(&out)
        .unwrap()
        .0
        .into_iter()
        .filter(|t| !t.0.starts_with("optimizer/"))
        .collect();
    for (n, _, w) in &got {
        assert_close(
            &format!("unit_norm default axis {n}"),
            w,
            &k[&format!("step3/{n}")].1,
            2e-5,
            1e-5,
        );
    }
    let conv = &got.iter().find(|t| t.0 == "conv2d.kernel").unwrap().2;
    for o in 0..32 {
        let sq: f32 = (0..9).map(|t| conv[t * 32 + o] * conv[t * 32 + o]).sum();
        assert!((sq - 3.0).abs() < 1e-5, "filter {o}: squared norm {sq}");
    }
}

fn inspect(path: &std::path::Path) -> serde_json::Value {
    let o = clampnet_cli(&["inspect", path.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn proximal_l1_gives_exact_zeros_where_plain_l1_gives_none() {
    let mut results = Vec::new();
    for (cfg, tag) in [("l1l2.toml", "plain"), ("proximal_l1.toml", "proximal")] {
        let out = tmp(&format!("{tag}.safetensors"));
        let o = clampnet_cli(&[
            "train",
            "--config",
            &config(cfg),
            "--limit-train",
            "2000",
            "--limit-test",
            "1000",
            "--epochs",
            "2",
            "--quiet",
            "--json",
            "--save",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let last: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap())
                .unwrap();
        let report = last["restrictions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "conv2d.kernel")
            .unwrap()
            .clone();
        let inspected = inspect(&out);
        let conv = inspected["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "conv2d.kernel")
            .unwrap()
            .clone();
        assert_eq!(
            conv["zero_fraction"], report["zero_fraction"],
            "inspect and the training report agree"
        );
        assert_eq!(conv["shape"], serde_json::json!([3, 3, 1, 32]));
        results.push((
            last["test_accuracy"].as_f64().unwrap(),
            conv["zero_fraction"].as_f64().unwrap(),
        ));
    }
    let ((plain_acc, plain_zeros), (prox_acc, prox_zeros)) = (results[0], results[1]);
    assert!(
        plain_zeros < 0.01,
        "plain L1 leaves (almost) no exact zeros: {plain_zeros}"
    );
    assert!(
        prox_zeros > 0.15,
        "proximal L1 zeroes many weights: {prox_zeros}"
    );
    assert!(
        (prox_acc - plain_acc).abs() < 0.08,
        "similar accuracy: plain {plain_acc}, proximal {prox_acc}"
    );
}

#[test]
fn inspect_reports_every_tensor_and_refuses_bad_files() {
    let plan = ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
    let mut w = clampnet::model::init_weights(&plan, 1);
    w[0][..100].iter_mut().for_each(|v| *v = 0.0);
    let named = plan
        .params
        .iter()
        .zip(&w)
        .map(|(p, v)| (p.name.clone(), p.shape.clone(), v.clone()))
        .collect();
    let path = tmp("inspect.safetensors");
    clampnet::checkpoint::save(&path, &named, None).unwrap();
    let j = inspect(&path);
    let t = j["tensors"].as_array().unwrap();
    assert_eq!(t.len(), 4);
    let conv = t.iter().find(|t| t["name"] == "conv2d.kernel").unwrap();
    assert!((conv["zero_fraction"].as_f64().unwrap() - 100.0 / 288.0).abs() < 1e-12);
    for key in ["max_abs", "filter_norm_min", "filter_norm_max"] {
        assert!(conv[key].as_f64().is_some(), "{key}");
    }
    let bias = t.iter().find(|t| t["name"] == "dense.bias").unwrap();
    assert!(
        bias["filter_norm_min"].is_null(),
        "no filter norms for a bias"
    );
    std::fs::write(tmp("junk.safetensors"), b"junk").unwrap();
    let o = clampnet_cli(&["inspect", tmp("junk.safetensors").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a readable safetensors file"));
}

#[test]
fn config_errors_name_the_key_the_line_and_the_allowed_values() {
    let bad = [
        ("[model]\ninput = [28, 28, 1]\n\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 32\nkernel_size = 3\nactivaton = \"relu\"\n", vec!["unknown field `activaton`", "expected one of", "`activation`", "line 4"]),
        ("[optimizer]\nlearning_rate = -0.1\n", vec!["line 2", "learning_rate", "must be a positive number, got -0.1"]),
        ("[training]\nbatch_size = 0\n", vec!["line 2", "batch_size", "must be at least 1"]),
        ("[training]\nepochs = 0\n", vec!["line 2", "epochs = 0", "must be at least 1"]),
        ("[trainig]\nepochs = 2\n", vec!["unknown field `trainig`", "`training`", "line 1"]),
        ("[[model.layers]]\ntype = \"conv3d\"\n", vec!["unknown variant `conv3d`", "`conv2d`", "line 2"]),
        (
            "[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\nkernel_constraint = { clip = { min = 1.0, max = -1.0 } }\n",
            vec!["clip min (1) must not exceed max (-1)", "line 1"],
        ),
        (
            "[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\nkernel_constraint = { max_nrm = { max_value = 2 } }\n",
            vec!["unknown variant `max_nrm`", "`max_norm`, `min_max_norm`, `unit_norm`, `non_neg`, `clip`"],
        ),
        ("[optimizer]\nclipnorm = 1.0\nclipvalue = 0.5\n", vec!["only one of clipnorm, global_clipnorm, clipvalue"]),
        ("[optimizer]\ntype = \"adagrad\"\n", vec!["unknown variant `adagrad`", "`adam`", "`sgd`"]),
        ("[optimizer]\ntype = \"sgd\"\nbeta_1 = 0.8\n", vec!["`beta_1` is a setting of adam and adamw, not of sgd"]),
        (
            "[optimizer.learning_rate]\ntype = \"cosine_decay\"\ninitial_learning_rate = 0.1\n",
            vec!["missing field `decay_steps`"],
        ),
        (
            "[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\nkernel_regularizer = { l1 = -0.01 }\n",
            vec!["must be a number >= 0, got -0.01"],
        ),
        (
            "[[model.layers]]\ntype = \"conv2d\"\nfilters = 4\nkernel_size = 3\nkernel_constraint = { unit_norm = { axis = [0, 7] } }\n[[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 3\nactivation = \"softmax\"\n",
            vec!["conv2d.kernel", "axes [0, 7]", "below the tensor rank 4"],
        ),
    ];
    for (text, needles) in bad {
        let e = Config::parse(text).expect_err(text);
        for n in needles {
            assert!(e.contains(n), "error for {text:?} lacks {n:?}: {e}");
        }
    }
    // and through the CLI: the file is named, exit code 1
    let path = tmp("bad.toml");
    std::fs::write(&path, "[optimizer]\nlearning_rate = 0\n").unwrap();
    let o = clampnet_cli(&["train", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("bad.toml") && e.contains("line 2") && e.contains("must be a positive number"),
        "{e}"
    );
    // --preset and --config together are refused
    let o = clampnet_cli(&[
        "train",
        "--config",
        &config("none.toml"),
        "--preset",
        "clip",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn shipped_configs_parse_and_the_presets_mean_the_same_as_the_flags() {
    use clampnet::restrict::{Preset, Restrictions};
    let plan = ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
    for (file, preset) in [
        ("none", Preset::None),
        ("l1l2", Preset::L1l2),
        ("clip", Preset::Clip),
        ("unitnorm", Preset::Unitnorm),
        ("combo", Preset::Combo),
    ] {
        let c = Config::load(std::path::Path::new(&config(&format!("{file}.toml")))).unwrap();
        assert_eq!(c.model, clampnet::model::ModelSpec::reference(), "{file}");
        let mut want = Restrictions::preset(preset, &plan);
        let mut got = c.restrictions.clone();
        want.tensors.sort_by(|a, b| a.0.cmp(&b.0));
        got.tensors.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "{file}.toml means the {preset:?} preset");
        assert_eq!((c.epochs, c.batch_size, c.optimizer.lr), (3, 32, 1e-3));
    }
    for entry in
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")).unwrap()
    {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with('#'),
            "{p:?} starts with a comment saying what it restricts"
        );
        Config::parse(&text).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    }
}
