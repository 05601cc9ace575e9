//! The `clampnet` binary end to end: it learns, its JSON has the promised fields, runs are
//! reproducible, and bad input gives a clear error and a non-zero exit, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn clampnet(args: &[&str]) -> Output {
    let _gpu = common::gpu().1; // one GPU user at a time, also across the binary's processes
    Command::new(env!("CARGO_BIN_EXE_clampnet"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clampnet-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[track_caller]
fn assert_fails_with(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {e}"
    );
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}: {e}");
    }
}

#[test]
fn learns_on_a_subset_and_reports_json_per_epoch() {
    // 2,000 real training images, one epoch: well above the 10% of chance
    let o = clampnet(&[
        "train",
        "--limit-train",
        "2000",
        "--limit-test",
        "1000",
        "--epochs",
        "2",
        "--json",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["epoch"], i + 1);
        for key in [
            "train_loss",
            "train_accuracy",
            "test_loss",
            "test_accuracy",
            "seconds",
            "train_seconds",
            "images_per_second",
        ] {
            assert!(
                l[key].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0),
                "{key} in {l}"
            );
        }
    }
    let acc1 = lines[0]["test_accuracy"].as_f64().unwrap();
    let acc2 = lines[1]["test_accuracy"].as_f64().unwrap();
    assert!(
        acc1 > 0.6,
        "test accuracy after one epoch on 2,000 images: {acc1}"
    );
    assert!(acc2 > acc1 - 0.02, "second epoch: {acc2} after {acc1}");
    assert!(lines[1]["train_loss"].as_f64() < lines[0]["train_loss"].as_f64());
}

#[test]
fn same_seed_gives_bit_identical_weights_and_init_continues_from_a_checkpoint() {
    let dir = tempdir("repro");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--limit-train",
            "300",
            "--limit-test",
            "100",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--seed",
            "7",
            "--quiet",
            "--save",
        ];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        let o = clampnet(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        clampnet::checkpoint::load(out).unwrap().0
    };
    let a = run(&dir.join("a.safetensors"), &[]);
    let b = run(&dir.join("b.safetensors"), &[]);
    assert!(a == b, "same seed, same adapter: bit-identical weights");
    let c = run(&dir.join("c.safetensors"), &["--preset", "l1l2"]);
    assert!(a != c, "a restriction changes the result");
    // --init starts from the saved weights (a fresh optimizer), in Keras names and layouts
    let d = run(
        &dir.join("d.safetensors"),
        &["--init", dir.join("a.safetensors").to_str().unwrap()],
    );
    assert!(a != d, "--init continues training from the checkpoint");
    assert_eq!(
        d.iter()
            .map(|t| (t.0.as_str(), t.1.clone()))
            .collect::<Vec<_>>(),
        a.iter()
            .map(|t| (t.0.as_str(), t.1.clone()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn bad_settings_are_refused_with_a_clear_error() {
    let bad_env = {
        let _gpu = common::gpu().1;
        Command::new(env!("CARGO_BIN_EXE_clampnet"))
            .args(["train", "--epochs", "1", "--limit-train", "64"])
            .env("CLAMPNET_KERNEL_SET", "tpu")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    assert_fails_with(
        &bad_env,
        &["CLAMPNET_KERNEL_SET: unknown kernel set 'tpu': expected auto, cpu or gpu"],
    );
    assert_fails_with(
        &clampnet(&["train", "--epochs", "0"]),
        &["--epochs must be at least 1"],
    );
    assert_fails_with(
        &clampnet(&["train", "--batch-size", "0"]),
        &["--batch-size must be at least 1"],
    );
    assert_fails_with(
        &clampnet(&["train", "--lr=-0.1"]),
        &["--lr must be a positive number"],
    );
    // a negative number after a flag reaches the setting's own check, which names the flag
    assert_fails_with(
        &clampnet(&["train", "--lr", "-1"]),
        &["--lr must be a positive number, got -1"],
    );
    for flag in [
        "--epochs",
        "--batch-size",
        "--limit-train",
        "--limit-test",
        "--save-every",
    ] {
        assert_fails_with(
            &clampnet(&["train", flag, "-3"]),
            &[&format!("{flag} must be at least 1, got -3")],
        );
    }
    assert_fails_with(
        &clampnet(&["bench", "--steps", "-5"]),
        &["--steps must be at least 1, got -5"],
    );
    assert_fails_with(
        &clampnet(&["make-sample", "--train", "-1"]),
        &["--train must be at least 0, got -1"],
    );
    assert_fails_with(
        &clampnet(&["eval", "x.safetensors", "--limit-test", "-1"]),
        &["--limit-test must be at least 1, got -1"],
    );
    assert_fails_with(
        &clampnet(&[
            "train",
            "--limit-train",
            "10",
            "--batch-size",
            "32",
            "--epochs",
            "1",
        ]),
        &["batch size 32 is larger than the 10 training examples"],
    );
    assert_fails_with(
        &clampnet(&["train", "--data", "/nonexistent/fmnist"]),
        &["/nonexistent/fmnist", "no such data folder"],
    );
    assert_fails_with(
        &clampnet(&["train", "--backend", "opengl-es9"]),
        &["unknown backend 'opengl-es9'"],
    );
    assert_fails_with(
        &clampnet(&[
            "train",
            "--adapter",
            "no-such-gpu-name",
            "--limit-train",
            "64",
        ]),
        &[
            "no GPU adapter found named like 'no-such-gpu-name'",
            "mesa-vulkan-drivers",
        ],
    );
    // an unknown preset is clap's error (exit 2), listing the choices
    let o = clampnet(&["train", "--preset", "maxnorm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("none, l1l2, clip, unitnorm, combo"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_checkpoints_and_data_are_refused_and_good_checkpoints_survive() {
    let dir = tempdir("bad");
    // a checkpoint of another model
    let small = clampnet::model::ModelPlan::new(&clampnet::model::ModelSpec {
        input: [28, 28, 1],
        layers: vec![
            clampnet::layers::Conv2d::new(
                8,
                3,
                clampnet::model::Padding::Valid,
                clampnet::model::Activation::Relu,
            )
            .into(),
            clampnet::layers::Flatten::new().into(),
            clampnet::layers::Dense::new(10, clampnet::model::Activation::Softmax).into(),
        ],
        names: Vec::new(),
    })
    .unwrap();
    let w = clampnet::model::init_weights(&small, 0);
    let named = small
        .params
        .iter()
        .zip(&w)
        .map(|(p, v)| (p.name.clone(), p.shape.clone(), v.clone()))
        .collect();
    let other = dir.join("other.safetensors");
    clampnet::checkpoint::save(&other, &named, None).unwrap();
    assert_fails_with(
        &clampnet(&[
            "train",
            "--init",
            other.to_str().unwrap(),
            "--limit-train",
            "64",
        ]),
        &[
            "other.safetensors",
            "conv2d.kernel has shape [3, 3, 1, 8], the model needs [3, 3, 1, 32]",
        ],
    );
    std::fs::write(dir.join("junk.safetensors"), b"not a checkpoint").unwrap();
    assert_fails_with(
        &clampnet(&[
            "train",
            "--init",
            dir.join("junk.safetensors").to_str().unwrap(),
        ]),
        &["junk.safetensors", "not a readable safetensors file"],
    );
    assert_fails_with(
        &clampnet(&[
            "train",
            "--init",
            dir.join("missing.safetensors").to_str().unwrap(),
        ]),
        &["missing.safetensors", "No such file"],
    );

    // images that do not fit the model (4x3 instead of 28x28)
    let data = dir.join("tiny");
    std::fs::create_dir_all(&data).unwrap();
    let idx = |m: u8, dims: &[u32], body: &[u8]| {
        let mut v = vec![0, 0, 8, m];
        dims.iter()
            .for_each(|d| v.extend_from_slice(&d.to_be_bytes()));
        v.extend_from_slice(body);
        v
    };
    std::fs::write(
        data.join("train-images-idx3-ubyte"),
        idx(3, &[2, 4, 3], &[0; 24]),
    )
    .unwrap();
    std::fs::write(data.join("train-labels-idx1-ubyte"), idx(1, &[2], &[0, 1])).unwrap();
    std::fs::write(
        data.join("t10k-images-idx3-ubyte"),
        idx(3, &[2, 4, 3], &[0; 24]),
    )
    .unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), idx(1, &[2], &[0, 1])).unwrap();
    assert_fails_with(
        &clampnet(&[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--batch-size",
            "2",
        ]),
        &["training images are 4x3x1, but the model's input is 28x28x1"],
    );
    // the same folder through $CLAMPNET_DATA
    let _g = common::gpu().1;
    let o = Command::new(env!("CARGO_BIN_EXE_clampnet"))
        .args(["train", "--batch-size", "2"])
        .env("CLAMPNET_DATA", &data)
        .output()
        .unwrap();
    drop(_g);
    assert_fails_with(&o, &["4x3x1"]);

    // a diverging run stops with a non-finite-loss error and leaves the existing checkpoint alone
    let good = dir.join("good.safetensors");
    let o = clampnet(&[
        "train",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
        "--epochs",
        "1",
        "--quiet",
        "--save",
        good.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(&good).unwrap();
    let o = clampnet(&[
        "train",
        "--limit-train",
        "640",
        "--limit-test",
        "32",
        "--epochs",
        "2",
        "--lr",
        "1e30",
        "--quiet",
        "--save",
        good.to_str().unwrap(),
    ]);
    assert_fails_with(&o, &["non-finite", "epoch 1"]);
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "the good checkpoint is untouched"
    );
}

#[test]
fn vulkan_and_gl_backends_agree() {
    // The same short run (63 shuffled steps from the same weights) on the two backends that Mesa provides
    // headless: lavapipe (Vulkan) and llvmpipe through EGL (GL), and the GPU kernel shapes on lavapipe.
    // Skipped where a backend is absent or WGPU_BACKEND pins one.
    if std::env::var_os("WGPU_BACKEND").is_some() {
        return;
    }
    let dir = tempdir("backends");
    let init = common::fixture("keras_init.safetensors");
    let mut weights = Vec::new();
    // the GPU kernel shapes too, on lavapipe
    for (backend, set) in [("vulkan", "auto"), ("gl", "auto"), ("vulkan", "gpu")] {
        let out = dir.join(format!("{backend}-{set}.safetensors"));
        let o = clampnet(&[
            "train",
            "--backend",
            backend,
            "--kernel-set",
            set,
            "--init",
            init.to_str().unwrap(),
            "--limit-train",
            "2000",
            "--limit-test",
            "500",
            "--epochs",
            "1",
            "--seed",
            "3",
            "--quiet",
            "--json",
            "--save",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{backend}: {}", stderr(&o));
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        weights.push((json, clampnet::checkpoint::load(&out).unwrap().0));
    }
    let vk = &weights[0];
    for (other, what) in weights[1..]
        .iter()
        .zip(["gl", "vulkan with the gpu kernel set"])
    {
        for ((name, _, a), (_, _, b)) in vk.1.iter().zip(&other.1) {
            common::assert_close(&format!("{name}: vulkan vs {what}"), a, b, 1e-4, 0.0);
        }
        for key in ["train_loss", "test_loss"] {
            let (a, b) = (vk.0[key].as_f64().unwrap(), other.0[key].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-4 * a.abs(),
                "{key}: vulkan {a}, {what} {b}"
            );
        }
    }
}

#[test]
fn bench_reports_speed_and_resources_as_json() {
    for set in ["cpu", "gpu"] {
        bench_with_kernel_set(set);
    }
}

fn bench_with_kernel_set(set: &str) {
    let o = clampnet(&[
        "bench",
        "--json",
        "--batch-sizes",
        "8,16",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--kernels",
        "--kernel-set",
        set,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["model_parameters"], 54410);
    assert_eq!(j["kernel_set"], set);
    assert!(
        (j["train_mflops_per_image"].as_f64().unwrap() - 1.1).abs() < 0.05,
        "{j}"
    );
    assert!(j["gpu_bytes_allocated"].as_u64().unwrap() > 54410 * 4 * 3);
    let rows = j["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (r, bs) in rows.iter().zip([8, 16]) {
        assert_eq!(r["batch_size"], bs);
        for key in [
            "images_per_second",
            "ms_per_step",
            "gflops",
            "seconds_per_60k_epoch",
        ] {
            assert!(
                r[key].as_f64().is_some_and(|v| v > 0.0 && v.is_finite()),
                "{key}: {r}"
            );
        }
        // gather, conv+relu+pool (CPU shapes, the 3x3 one-channel layer: the kernel regrouped, then one
        // pass per two 16-channel groups: 2), dense forward with the loss (CPU shapes: + reduce with the
        // loss; below 64 rows no transpose), dense backward (weight with bias, input), conv weight
        // gradient (2), Adam, metrics; no regularization-loss pass without a regularizer
        let expected = if set == "cpu" { 11 } else { 9 };
        assert_eq!(r["dispatches_per_step"], expected);
        assert_eq!(r["kernels"].as_array().unwrap().len(), expected);
        // how the per-kernel times were taken: timestamp queries where the adapter has them
        let timing = r["kernel_timing"].as_str().unwrap_or("");
        assert!(
            timing.starts_with("timestamp queries") || timing.starts_with("wall clock"),
            "{r}"
        );
        // the host's time to record a step, and (timestamps) the whole step's GPU time in one pass
        assert!(
            r["host_record_us_per_step"]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{r}"
        );
        if timing.starts_with("timestamp queries") {
            assert!(
                r["gpu_us_per_step"].as_f64().is_some_and(|v| v > 0.0),
                "{r}"
            );
        }
    }
}

fn run_ok(args: &[&str]) {
    let o = clampnet(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
}

fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    clampnet::checkpoint::load(path).unwrap().0
}

#[test]
fn resuming_gives_bit_identical_weights_and_adam_state() {
    let dir = tempdir("resume");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let common = [
        "--limit-train",
        "300",
        "--limit-test",
        "100",
        "--batch-size",
        "32",
        "--seed",
        "4",
        "--preset",
        "l1l2",
        "--quiet",
    ];
    // two epochs in one run
    let straight = p("straight.safetensors");
    let mut args = vec!["train", "--epochs", "2", "--save", &straight];
    args.extend_from_slice(&common);
    run_ok(&args);
    // one epoch, then resume for one more (--epochs is the total to reach, as Keras' initial_epoch)
    let half_path = p("half.safetensors");
    let mut args = vec!["train", "--epochs", "1", "--save", &half_path];
    args.extend_from_slice(&common);
    run_ok(&args);
    let half = p("half.safetensors");
    run_ok(&[
        "train",
        "--resume",
        &half,
        "--epochs",
        "2",
        "--limit-test",
        "100",
        "--quiet",
        "--save",
        &p("resumed.safetensors"),
    ]);
    let (a, b) = (
        tensors(&dir.join("straight.safetensors")),
        tensors(&dir.join("resumed.safetensors")),
    );
    assert_eq!(a.len(), 12, "4 weights + Adam's m and v for each");
    assert!(
        a == b,
        "two epochs straight and one + one resumed are bit-identical (weights, m, v)"
    );
    // the checkpoint still loads as plain weights, and resuming with other settings is refused
    run_ok(&[
        "train",
        "--init",
        &half,
        "--epochs",
        "1",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
        "--quiet",
    ]);
    let o = clampnet(&[
        "train",
        "--resume",
        &half,
        "--lr",
        "0.1",
        "--seed",
        "4",
        "--batch-size",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--batch-size 64 (the checkpoint has 32), --lr 0.1 (the checkpoint has learning rate 0.001) conflict with the run being resumed"),
        "each conflicting flag is named, the equal --seed is not: {}",
        stderr(&o)
    );
    let o = clampnet(&["train", "--resume", &half, "--preset", "clip"]);
    assert!(
        stderr(&o).contains("--preset clip (the checkpoint has preset l1l2) conflicts with"),
        "{}",
        stderr(&o)
    );
}

/// A requeued job runs its command line again: --auto-resume starts a run when --save's file does
/// not exist and resumes it when it does, and the flags that restate the checkpoint's settings are
/// accepted. One epoch + a rerun to two equals two epochs straight, bit for bit.
#[test]
fn the_same_command_line_starts_and_then_resumes_a_run() {
    let dir = tempdir("auto-resume");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let config = p("l1.toml");
    std::fs::write(
        &config,
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/l1l2.toml"))
            .unwrap(),
    )
    .unwrap();
    let run = |epochs: &str, save: &str| {
        let o = clampnet(&[
            "train",
            "--config",
            &config,
            "--epochs",
            epochs,
            "--limit-train",
            "200",
            "--limit-test",
            "50",
            "--batch-size",
            "16",
            "--seed",
            "3",
            "--lr",
            "0.002",
            "--save",
            save,
            "--auto-resume",
            "--metrics",
            &format!("{save}.jsonl"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let straight = p("straight.safetensors");
    run("2", &straight);
    let again = p("again.safetensors");
    let first = run("1", &again);
    assert!(!first.contains("resuming"), "{first}");
    let second = run("2", &again);
    assert!(second.contains("resuming at epoch 2 step 0"), "{second}");
    assert!(
        tensors(Path::new(&straight)) == tensors(Path::new(&again)),
        "started, then resumed by the same command: bit-identical to one run"
    );
    let lines = std::fs::read_to_string(format!("{again}.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "the metrics log is appended to");
    // and a third time: nothing left to train, nothing changes
    run("2", &again);
    assert!(tensors(Path::new(&straight)) == tensors(Path::new(&again)));
}

#[test]
fn ctrl_c_saves_a_checkpoint_at_a_step_boundary_that_resumes_exactly() {
    let dir = tempdir("sigint");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    // 128 steps per epoch: two 64-step chunks, so an interruption can land inside an epoch
    let common = [
        "--limit-train",
        "4096",
        "--limit-test",
        "256",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--quiet",
    ];
    let _g = common::gpu().1;
    let interrupted = p("interrupted.safetensors");
    let mut args = vec!["train", "--save", &interrupted];
    args.extend_from_slice(&common);
    let child = Command::new(env!("CARGO_BIN_EXE_clampnet"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    drop(_g);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success() {
        eprintln!("the run ended before the interrupt arrived; nothing to check on this machine");
        return;
    }
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted in epoch") && err.contains("--resume"),
        "{err}"
    );
    let (_, meta) = clampnet::checkpoint::load(&dir.join("interrupted.safetensors")).unwrap();
    eprintln!(
        "interrupted at epoch {} + step {}",
        meta["epoch"], meta["epoch_step"]
    );
    // resuming reaches exactly the weights of an uninterrupted run
    run_ok(&[
        "train",
        "--resume",
        &p("interrupted.safetensors"),
        "--limit-test",
        "256",
        "--quiet",
        "--save",
        &p("finished.safetensors"),
    ]);
    let straight = p("straight.safetensors");
    let mut args = vec!["train", "--save", &straight];
    args.extend_from_slice(&common);
    run_ok(&args);
    assert!(
        tensors(&dir.join("finished.safetensors")) == tensors(&dir.join("straight.safetensors")),
        "bit-identical after the interruption"
    );
}

#[test]
fn predict_and_eval_a_trained_checkpoint() {
    let dir = tempdir("predict");
    let ckpt = dir.join("model.safetensors");
    let o = clampnet(&[
        "train",
        "--limit-train",
        "2000",
        "--limit-test",
        "500",
        "--epochs",
        "1",
        "--quiet",
        "--json",
        "--save",
        ckpt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let trained: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    // eval agrees with the accuracy train reported on the same test images; the heatmap is written
    let heat = dir.join("confusion.png");
    let o = clampnet(&[
        "eval",
        ckpt.to_str().unwrap(),
        "--limit-test",
        "500",
        "--json",
        "--heatmap",
        heat.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ev["examples"], 500);
    assert!(
        (ev["accuracy"].as_f64().unwrap() - trained["test_accuracy"].as_f64().unwrap()).abs()
            < 1e-9,
        "{ev} vs {trained}"
    );
    let confusion = ev["confusion"].as_array().unwrap();
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 500);
    let png = image::open(&heat).unwrap();
    assert_eq!((png.width(), png.height()), (240, 240));

    // predict: real test images written as PNG, one of them at twice the size
    let ds = clampnet::data::load_embedded_sample().unwrap();
    let save = |i: usize, scale: u32, path: &Path| {
        let img = image::GrayImage::from_fn(28 * scale, 28 * scale, |x, y| {
            image::Luma(
                [ds.test.images[i * 784 + (y / scale) as usize * 28 + (x / scale) as usize]],
            )
        });
        img.save(path).unwrap();
    };
    let (a, b) = (dir.join("a.png"), dir.join("b.png"));
    save(0, 1, &a);
    save(1, 2, &b);
    let o = clampnet(&[
        "predict",
        ckpt.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        "--top-k",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is 56x56: resized to the model's 28x28"),
        "{}",
        stderr(&o)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let preds = l["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), 3);
        let probs: Vec<f64> = preds
            .iter()
            .map(|p| p["probability"].as_f64().unwrap())
            .collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs.iter().sum::<f64>() <= 1.0 + 1e-9);
        assert!(preds[0]["label"]
            .as_str()
            .is_some_and(|s| clampnet::data::FASHION_CLASSES.contains(&s)));
    }
    // the model classifies these two real test images as their labels (ankle boot, pullover)
    assert_eq!(lines[0]["predictions"][0]["class"], ds.test.labels[0]);
    assert_eq!(lines[1]["predictions"][0]["class"], ds.test.labels[1]);
    let inverted = clampnet(&[
        "predict",
        ckpt.to_str().unwrap(),
        a.to_str().unwrap(),
        "--json",
        "--invert",
    ]);
    assert!(inverted.status.success());
    assert_ne!(
        inverted.stdout,
        clampnet(&[
            "predict",
            ckpt.to_str().unwrap(),
            a.to_str().unwrap(),
            "--json"
        ])
        .stdout
    );

    // unreadable and empty images are refused, naming the file
    let junk = dir.join("junk.png");
    std::fs::write(&junk, b"not an image").unwrap();
    assert_fails_with(
        &clampnet(&["predict", ckpt.to_str().unwrap(), junk.to_str().unwrap()]),
        &["junk.png", "cannot read this image"],
    );
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    assert_fails_with(
        &clampnet(&["predict", ckpt.to_str().unwrap(), empty.to_str().unwrap()]),
        &["empty.png"],
    );
}

#[test]
fn trains_on_an_image_folder_dataset_and_predicts_its_class_names() {
    // Keras' image_dataset_from_directory layout: DIR/{train,test}/<class>/*.png, 20x20 RGB images
    // resized to the model's 28x28x3; classes are the folder names, sorted
    let dir = tempdir("folders");
    let mut rng = common::TestRng::new(31);
    let pattern = |class: usize, x: u32, y: u32| -> bool {
        match class {
            0 => (y / 2).is_multiple_of(2),             // horizontal stripes
            1 => (x / 2).is_multiple_of(2),             // vertical stripes
            _ => ((x / 2) + (y / 2)).is_multiple_of(2), // checkerboard
        }
    };
    let names = ["checks", "horizontal", "vertical"]; // sorted, as the label order
    let class_of = |name: &str| match name {
        "horizontal" => 0,
        "vertical" => 1,
        _ => 2,
    };
    for split in ["train", "test"] {
        for name in names {
            let d = dir.join(split).join(name);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..if split == "train" { 24 } else { 8 } {
                let img = image::RgbImage::from_fn(20, 20, |x, y| {
                    let on = pattern(class_of(name), x, y);
                    let noise = (rng.next_u32() % 60) as u8;
                    if on {
                        image::Rgb([200 + noise / 2, 180, 190])
                    } else {
                        image::Rgb([noise, 20, noise])
                    }
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let cfg = dir.join("rgb.toml");
    std::fs::write(
        &cfg,
        "[model]\ninput = [28, 28, 3]\n\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 8\nkernel_size = 3\nactivation = \"relu\"\n\n\
         [[model.layers]]\ntype = \"max_pool2d\"\n\n[[model.layers]]\ntype = \"flatten\"\n\n[[model.layers]]\ntype = \"dense\"\nunits = 3\n\
         activation = \"softmax\"\n\n[optimizer]\nlearning_rate = 0.003\n\n[training]\nepochs = 6\nbatch_size = 8\n",
    )
    .unwrap();
    let ckpt = dir.join("model.safetensors");
    let data = dir.to_str().unwrap();
    let o = clampnet(&[
        "train",
        "--data",
        data,
        "--config",
        cfg.to_str().unwrap(),
        "--json",
        "--quiet",
        "--save",
        ckpt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert!(
        last["test_accuracy"].as_f64().unwrap() >= 0.9,
        "stripes and checks are easy: {last}"
    );
    let (_, meta) = clampnet::checkpoint::load(&ckpt).unwrap();
    assert_eq!(meta["class_names"], r#"["checks","horizontal","vertical"]"#);
    // predict prints the folder names
    let img = dir.join("test").join("vertical").join("0.png");
    let o = clampnet(&[
        "predict",
        ckpt.to_str().unwrap(),
        img.to_str().unwrap(),
        "--top-k",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("vertical"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // the reference model has 10 outputs: refused, saying what to change
    assert_fails_with(
        &clampnet(&["train", "--data", data, "--epochs", "1"]),
        &["has 3 classes", "10 units", "units = 3"],
    );
    // and a 3-class checkpoint evaluated on 10-class data (the default dataset) is refused, not a panic
    assert_fails_with(
        &clampnet(&["eval", ckpt.to_str().unwrap(), "--limit-test", "50"]),
        &["has 10 classes", "3 outputs", "--data"],
    );
    // a test folder with other classes is refused
    std::fs::create_dir_all(dir.join("test").join("zigzag")).unwrap();
    assert_fails_with(
        &clampnet(&["train", "--data", data, "--config", cfg.to_str().unwrap()]),
        &["differ from train's", "zigzag"],
    );
}

#[test]
fn viz_draws_filters_histograms_and_curves() {
    let dir = tempdir("viz");
    let ckpt = dir.join("m.safetensors");
    let log = dir.join("metrics.jsonl");
    let o = clampnet(&[
        "train",
        "--limit-train",
        "640",
        "--limit-test",
        "64",
        "--epochs",
        "2",
        "--quiet",
        "--config",
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs/proximal_l1.toml")
            .to_string_lossy(),
        "--save",
        ckpt.to_str().unwrap(),
        "--metrics",
        log.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        2,
        "one metrics line per epoch"
    );
    let out = dir.join("pictures");
    let o = clampnet(&[
        "viz",
        ckpt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--metrics",
        log.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = String::from_utf8_lossy(&o.stdout).lines().count();
    assert_eq!(listed, 4, "filters, two histograms, curves");
    for (file, min_w) in [
        ("conv2d_kernel_filters.png", 300),
        ("conv2d_kernel_histogram.png", 700),
        ("dense_kernel_histogram.png", 700),
        ("training_curves.png", 1000),
    ] {
        let img = image::open(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            img.width() >= min_w && img.height() >= 300,
            "{file}: {}x{}",
            img.width(),
            img.height()
        );
        // not blank: more than a handful of distinct colours
        let rgb = img.to_rgb8();
        let distinct: std::collections::HashSet<_> = rgb.pixels().map(|p| p.0).collect();
        assert!(distinct.len() > 10, "{file} has {} colours", distinct.len());
    }
    // a bad metrics log is refused
    std::fs::write(&log, "not json\n").unwrap();
    assert_fails_with(
        &clampnet(&[
            "viz",
            ckpt.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--metrics",
            log.to_str().unwrap(),
        ]),
        &["metrics.jsonl", "not a `train --metrics` log"],
    );
}

#[test]
fn info_lists_the_adapter_the_limits_clampnet_needs_and_the_shader_check() {
    let o = clampnet(&["info"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "info failed: {}", stderr(&o));
    // the uniform windows of the CPU-adapter kernels need WebGPU's baseline 64 KiB uniform binding
    assert!(out.contains("uniform binding 64 KiB (needs 64)"), "{out}");
    assert!(out.contains("storage buffers per stage (needs 8)"), "{out}");
    assert!(
        out.contains("kernel variants validated by naga and translated to SPIR-V, MSL, HLSL"),
        "{out}"
    );
    assert!(out.contains("train would use: "), "{out}");
}

/// A 32×32×3 model trains from rank-4 IDX files (a CIFAR-shaped dataset).
#[test]
fn a_32x32x3_model_trains_from_rank_4_idx_files() {
    let dir = tempdir("rgb32");
    let idx = |dims: &[u32], body: &[u8]| -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    };
    let n = 48u32;
    let imgs: Vec<u8> = (0..n * 32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let lbls: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for (img, lbl) in [
        ("train-images-idx4-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx4-ubyte", "t10k-labels-idx1-ubyte"),
    ] {
        std::fs::write(dir.join(img), idx(&[n, 32, 32, 3], &imgs)).unwrap();
        std::fs::write(dir.join(lbl), idx(&[n], &lbls)).unwrap();
    }
    let cfg = dir.join("rgb.toml");
    std::fs::write(
        &cfg,
        "[model]\ninput = [32, 32, 3]\n[[model.layers]]\ntype = \"conv2d\"\nfilters = 8\nkernel_size = 3\npadding = \"same\"\nactivation = \"relu\"\n\
         kernel_constraint = { max_norm = { max_value = 3.0, axis = [0, 1, 2] } }\n\
         [[model.layers]]\ntype = \"dropout\"\nrate = 0.2\n[[model.layers]]\ntype = \"max_pool2d\"\n\
         [[model.layers]]\ntype = \"flatten\"\n[[model.layers]]\ntype = \"dense\"\nunits = 10\nactivation = \"softmax\"\n\
         [optimizer]\ntype = \"sgd\"\nlearning_rate = 0.01\nmomentum = 0.9\n[loss]\ntype = \"categorical_crossentropy\"\n",
    )
    .unwrap();
    let o = clampnet(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert!(line["train_loss"].as_f64().unwrap().is_finite());
}

/// The CNN configs people get wrong are refused before any GPU work (no adapter is opened), naming the
/// line of the layer or key: stride 0, a pool larger than its input, dropout rate 1, BatchNormalization
/// on an axis the input does not have, another optimizer's option, and a bias restriction on a layer
/// without a bias.
#[test]
fn bad_cnn_configs_are_refused_naming_the_line_before_any_gpu_work() {
    let d = tempdir("badcnn");
    let base = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/batchnorm_gap.toml"
    ))
    .unwrap();
    let cases: [(&str, &[&str]); 6] = [
        (
            "stride0",
            &["line 17", "layer 0 (conv2d)", "strides must be at least 1"],
        ),
        (
            "pool",
            &["line ", "pool_size 40 does not fit its 16x16 input"],
        ),
        (
            "dropout",
            &["line ", "dropout rate must be in [0, 1), got 1"],
        ),
        (
            "axis",
            &[
                "line 25",
                "axis = 1 is not the channel axis",
                "(None, 32, 32, 32)",
            ],
        ),
        (
            "option",
            &["line 81", "`nesterov` is a setting of sgd, not of adam"],
        ),
        ("bias", &["bias_regularizer", "no bias (use_bias = false)"]),
    ];
    for (tag, needles) in cases {
        let text = match tag {
            // the first conv's strides = 0 (its table starts at line 17)
            "stride0" => base.replacen("padding = \"same\"\n", "padding = \"same\"\nstrides = 0\n", 1),
            // the second max-pool (over a 16x16 input) with a 40x40 window
            "pool" => {
                let at = base.rfind("pool_size = 2").unwrap();
                format!("{}pool_size = 40{}", &base[..at], &base[at + 13..])
            }
            "dropout" => base.replacen(
                "[[model.layers]]\ntype = \"global_average_pooling2d\"",
                "[[model.layers]]\ntype = \"dropout\"\nrate = 1.0\n\n[[model.layers]]\ntype = \"global_average_pooling2d\"",
                1,
            ),
            // axis 1 of (None, 32, 32, 32) is the rows, not the channels; the layer is the 2nd table, line 25
            "axis" => base.replacen(
                "type = \"batch_normalization\"\n",
                "type = \"batch_normalization\"\naxis = 1\n",
                1,
            ),
            "option" => base.replacen("type = \"adam\"\n", "type = \"adam\"\nnesterov = true\n", 1),
            "bias" => base.replacen(
                "use_bias = false\n",
                "use_bias = false\nbias_regularizer = { l2 = 0.1 }\n",
                1,
            ),
            _ => unreachable!(),
        };
        assert_ne!(text, base, "{tag}: the case changed the config");
        let p = d.join(format!("{tag}.toml"));
        std::fs::write(&p, &text).unwrap();
        let o = {
            let _gpu = common::gpu().1;
            Command::new(env!("CARGO_BIN_EXE_clampnet"))
                .args(["train", "--config", p.to_str().unwrap(), "--epochs", "1"])
                .env("RUST_LOG", "info")
                .output()
                .unwrap()
        };
        let mut all = vec![format!("{tag}.toml")];
        all.extend(needles.iter().map(|n| n.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_fails_with(&o, &all);
        assert!(
            !stderr(&o).contains("adapter:"),
            "{tag}: an adapter was opened: {}",
            stderr(&o)
        );
    }
}
