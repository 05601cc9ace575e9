//! The fit callbacks (`src/callbacks.rs`) against Keras' own EarlyStopping and ReduceLROnPlateau,
//! driven by tools/make_keras_callback_fixtures.py over fixed sequences of epoch logs: the same stop
//! decision, best epoch and learning rate after every epoch. No GPU.

use clampnet::config::{EarlyStoppingConfig, ReduceLrConfig};
use serde_json::Value;

#[test]
fn callbacks_decide_as_keras_does() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keras_callbacks.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 13);
    for (ci, c) in cases.iter().enumerate() {
        let values: Vec<f64> = c["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let steps = c["steps"].as_array().unwrap();
        let what = format!("case {ci} {} {}", c["kind"], c["args"]);
        match c["kind"].as_str().unwrap() {
            "early_stopping" => {
                let cfg: EarlyStoppingConfig = serde_json::from_value(c["args"].clone()).unwrap();
                let mut e = cfg.resolve().unwrap();
                let mut have_best = false;
                for (epoch, (&v, want)) in values.iter().zip(steps).enumerate() {
                    let d = e.on_epoch_end(epoch, Some(v), have_best);
                    have_best |= d.save_weights;
                    assert_eq!(
                        d.stop,
                        want["stop"].as_bool().unwrap(),
                        "{what} epoch {epoch}: stop"
                    );
                    if let Some(b) = want["best_epoch"].as_u64() {
                        assert_eq!(
                            e.state.best_epoch as u64, b,
                            "{what} epoch {epoch}: best epoch"
                        );
                    }
                }
            }
            _ => {
                let cfg: ReduceLrConfig = serde_json::from_value(c["args"].clone()).unwrap();
                let mut r = cfg.resolve().unwrap();
                let mut lr = 0.01f32;
                for (epoch, (&v, want)) in values.iter().zip(steps).enumerate() {
                    if let Some(new) = r.on_epoch_end(epoch, Some(v), lr) {
                        lr = new;
                    }
                    assert_eq!(
                        lr,
                        want["learning_rate"].as_f64().unwrap() as f32,
                        "{what} epoch {epoch}: learning rate"
                    );
                }
            }
        }
    }
}

/// A monitored value that is not logged changes nothing (Keras warns and skips).
#[test]
fn a_missing_monitored_value_changes_nothing() {
    let cfg: EarlyStoppingConfig =
        serde_json::from_value(serde_json::json!({"patience": 0})).unwrap();
    let mut e = cfg.resolve().unwrap();
    for epoch in 0..5 {
        assert!(!e.on_epoch_end(epoch, None, false).stop);
    }
    let cfg: ReduceLrConfig = serde_json::from_value(serde_json::json!({"patience": 0})).unwrap();
    let mut r = cfg.resolve().unwrap();
    assert_eq!(r.on_epoch_end(0, None, 0.01), None);
    // a monitor whose direction cannot be told needs a mode, as in Keras
    let cfg: EarlyStoppingConfig =
        serde_json::from_value(serde_json::json!({"monitor": "val_auc"})).unwrap();
    assert!(cfg.resolve().unwrap_err().contains("mode"));
    let cfg: ReduceLrConfig = serde_json::from_value(serde_json::json!({"factor": 1.5})).unwrap();
    assert!(cfg.resolve().unwrap_err().contains("factor"));
}

mod common;

fn clampnet(args: &[&str]) -> std::process::Output {
    let _gpu = common::gpu().1;
    std::process::Command::new(env!("CARGO_BIN_EXE_clampnet"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Through the CLI: a validation split is logged (val_loss, val_accuracy), early stopping ends the run
/// when the monitored value stops improving, ReduceLROnPlateau lowers the rate for the next epoch, and
/// a run resumed between epochs carries the callbacks' state and ends bit-identical to one that never
/// stopped.
#[test]
fn fit_options_through_the_cli_and_across_a_resume() {
    let d = std::env::temp_dir().join(format!("clampnet-callbacks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    // min_delta 10: nothing after the first epoch counts as an improvement
    let cfg = d.join("fit.toml");
    std::fs::write(
        &cfg,
        "[training]\nvalidation_split = 0.25\n[training.early_stopping]\npatience = 2\nmin_delta = 10.0\n\
         [training.reduce_lr_on_plateau]\npatience = 1\nfactor = 0.5\nmin_delta = 10.0\n",
    )
    .unwrap();
    let run = |extra: &[&str], save: &std::path::Path| -> Vec<Value> {
        let mut args = vec![
            "train",
            "--limit-train",
            "96",
            "--limit-test",
            "16",
            "--json",
            "--quiet",
            "--save",
        ];
        args.push(save.to_str().unwrap());
        args.extend_from_slice(extra);
        let o = clampnet(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let straight = d.join("straight.safetensors");
    let lines = run(
        &["--config", cfg.to_str().unwrap(), "--epochs", "6"],
        &straight,
    );
    // epoch 1 sets the best; epochs 2 and 3 do not improve: patience 2 stops after epoch 3
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert!(l["val_loss"].as_f64().is_some() && l["val_accuracy"].as_f64().is_some());
    }
    let lrs: Vec<f64> = lines
        .iter()
        .map(|l| l["learning_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(
        lrs,
        [0.001f32 as f64, 0.001f32 as f64, 0.0005f32 as f64],
        "reduced after epoch 2"
    );
    // stopped after epoch 1, resumed: the same end
    let half = d.join("half.safetensors");
    run(&["--config", cfg.to_str().unwrap(), "--epochs", "1"], &half);
    let resumed = d.join("resumed.safetensors");
    let more = run(
        &["--resume", half.to_str().unwrap(), "--epochs", "6"],
        &resumed,
    );
    assert_eq!(more.len(), 2, "epochs 2 and 3");
    let (a, ma) = clampnet::files::load_checkpoint(&straight, None).unwrap();
    let (b, mb) = clampnet::files::load_checkpoint(&resumed, None).unwrap();
    assert_eq!(a, b, "resumed vs straight");
    assert_eq!(ma.learning_rate, mb.learning_rate);
    assert_eq!(ma.callbacks, mb.callbacks);
    // bad fit options are refused with their name
    let o = clampnet(&["train", "--validation-split", "1.5", "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("validation_split"));
}
