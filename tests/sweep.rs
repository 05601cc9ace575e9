//! `clampnet sweep`: the grid's order and ids, sharding, trials equal to solo `train` runs (every
//! restriction kind, both kernel sets), results that survive `kill -9`, failed trials named and
//! retried, deleted results retrained and nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use clampnet::sweep::{array_spec, Grid, Shard};

/// One process on the software adapter at a time.
static GPU: Mutex<()> = Mutex::new(());

fn clampnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clampnet"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clampnet-sweep-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    clampnet::checkpoint::load(path).unwrap().0
}

/// Every restriction kind on the reference model's conv kernel, one configuration each.
const EVERY_KIND: &str = r#"
seeds = [5]
[axes]
"model.layers.0.kernel_regularizer" = ["none", { l1 = 1e-3 }, { l2 = 1e-2 }, { l1 = 1e-4, l2 = 1e-3 }]
[[trials]]
"model.layers.0.kernel_constraint" = { clip = { min = -0.2, max = 0.2 } }
[[trials]]
"model.layers.0.kernel_constraint" = { unit_norm = { axis = [0, 1, 2] } }
[[trials]]
"model.layers.0.kernel_constraint" = { max_norm = { max_value = 0.5, axis = [0, 1, 2] } }
[[trials]]
"model.layers.0.kernel_constraint" = { min_max_norm = { min_value = 0.2, max_value = 0.6, rate = 0.5, axis = [0, 1, 2] } }
[[trials]]
"model.layers.0.kernel_constraint" = "non_neg"
"model.layers.0.bias_constraint" = "non_neg"
"#;

fn write_grid(dir: &Path, body: &str) -> String {
    let path = dir.join("grid.toml");
    std::fs::write(
        &path,
        format!("base = \"{}\"\n{body}", repo("configs/none.toml")),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn the_grid_is_the_product_of_its_axes_in_order_with_stable_ids() {
    let dir = tempdir("plan");
    let grid = write_grid(
        &dir,
        r#"
seeds = [0, 1]
[axes]
"model.layers.0.kernel_regularizer.l1" = [0.0, 1e-3]
"model.layers.0.kernel_constraint" = ["none", { max_norm = { max_value = 2.0, axis = [0, 1, 2] } }]
[[trials]]
"optimizer.learning_rate" = 0.01
[[trials]]
label = "faster, with momentum"
"optimizer.learning_rate" = 0.02
"optimizer.beta_1" = 0.8
"#,
    );
    let g = Grid::load(Path::new(&grid)).unwrap();
    assert_eq!(g.trials.len(), 12, "(2 x 2 + 2) configurations x 2 seeds");
    assert_eq!(g.trials[10].label, "faster, with momentum");
    let labels: Vec<(&str, u64)> = g
        .trials
        .iter()
        .map(|t| (t.label.as_str(), t.seed))
        .collect();
    assert_eq!(
        labels[0],
        ("kernel_regularizer.l1=0.0, kernel_constraint=none", 0)
    );
    assert_eq!(
        labels[1],
        ("kernel_regularizer.l1=0.0, kernel_constraint=none", 1)
    );
    assert_eq!(
        labels[2],
        (
            "kernel_regularizer.l1=0.0, kernel_constraint=max_norm(axis=[0,1,2], max_value=2.0)",
            0
        ),
        "the first axis is the slowest, the seed the fastest"
    );
    assert_eq!(
        labels[4].0,
        "kernel_regularizer.l1=0.001, kernel_constraint=none"
    );
    assert_eq!(labels[8].0, "optimizer.learning_rate=0.01");
    // ids depend on the settings and the seed only: the same in a grown grid
    let first = g.trials[2].id.clone();
    assert!(first.ends_with("-s0") && first.len() == 13, "{first}");
    let grown = write_grid(
        &tempdir("plan-grown"),
        r#"
seeds = [0, 1, 2]
[axes]
"model.layers.0.kernel_regularizer.l1" = [0.0, 1e-4, 1e-3]
"model.layers.0.kernel_constraint" = ["none", { max_norm = { axis = [0, 1, 2], max_value = 2.0 } }]
"#,
    );
    let g2 = Grid::load(Path::new(&grown)).unwrap();
    assert!(g2.trials.iter().any(|t| t.id == first));
    let (text, ext) = g.trial_config(&g.trials[2]).unwrap();
    assert_eq!(ext, "toml");
    let cfg = clampnet::config::Config::parse(&text).unwrap();
    assert_eq!(cfg.restrictions.tensors.len(), 1, "{text}");
    // `sweep plan` prints them
    let o = clampnet(&["sweep", "plan", &grid, "--shards", "3"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("12 trials: 6 configurations x 2 seeds"),
        "{out}"
    );
    assert!(out.contains(&format!("{first}  shard 2  seed 0")), "{out}");
}

#[test]
fn a_bad_grid_is_refused_naming_the_key_and_the_trial() {
    let dir = tempdir("bad");
    for (body, needle) in [
        (
            "[axes]\n\"model.layers.7.kernel_regularizer.l1\" = [0.1]\n",
            "model.layers.7 is past the end of a list of 4",
        ),
        (
            "[axes]\n\"model.layers.0.kernel_regularizer.l3\" = [0.1]\n",
            "l3",
        ),
        (
            "[axes]\n\"model.layers.0.filters\" = []\n",
            "must be a non-empty list",
        ),
        ("seeds = []\n", "seeds is empty"),
    ] {
        let grid = write_grid(&dir, body);
        let o = clampnet(&["sweep", "plan", &grid]);
        assert_eq!(o.status.code(), Some(1), "{body}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{body}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
    }
    // a bad shared flag is refused once, before any trial
    let grid = write_grid(&dir, "seeds = [0]\n");
    let out = dir.join("out").display().to_string();
    let o = clampnet(&["sweep", "run", &grid, "--out", &out, "--epochs", "-2"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--epochs must be at least 1, got -2"),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new(&out).join("trials").exists(), "nothing ran");
    let o = clampnet(&[
        "sweep",
        "run",
        &grid,
        "--out",
        &out,
        "--models-per-pass",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--models-per-pass must be at least 1"),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new(&out).join("trials").exists(), "nothing ran");
}

#[test]
fn shards_come_from_the_flag_a_slurm_array_or_an_indexed_job() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
    };
    let none = env(&[]);
    let s = |shard, shards, e: &dyn Fn(&str) -> Option<String>| Shard::resolve(shard, shards, e);
    assert_eq!(
        s(Some("2/5"), None, &none).unwrap(),
        Shard { index: 2, count: 5 }
    );
    assert_eq!(s(None, None, &none).unwrap(), Shard { index: 0, count: 1 });
    // an array --array=10-16:3 has tasks 10, 13, 16: task 13 is the second of three
    let slurm = env(&[
        ("SLURM_ARRAY_TASK_ID", "13"),
        ("SLURM_ARRAY_TASK_MIN", "10"),
        ("SLURM_ARRAY_TASK_STEP", "3"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ]);
    assert_eq!(s(None, None, &slurm).unwrap(), Shard { index: 1, count: 3 });
    // with --shards the task id is the shard: a resubmitted --array=1,3 keeps its shards
    let resubmit = env(&[
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
    ]);
    assert_eq!(
        s(None, Some(4), &resubmit).unwrap(),
        Shard { index: 3, count: 4 }
    );
    let k8s = env(&[("JOB_COMPLETION_INDEX", "2")]);
    assert_eq!(
        s(None, Some(3), &k8s).unwrap(),
        Shard { index: 2, count: 3 }
    );
    let e = s(None, None, &k8s).unwrap_err().to_string();
    assert!(e.contains("give --shards N"), "{e}");
    assert!(s(Some("4/4"), None, &none).is_err());
    assert!(s(Some("x"), None, &none)
        .unwrap_err()
        .to_string()
        .contains("--shard 0/4"));
    assert_eq!(array_spec(&[0, 2, 3, 4, 7]), "0,2-4,7");
}

/// The sweep's flags for a few fast trials.
const SMALL: [&str; 6] = [
    "--limit-train",
    "96",
    "--limit-test",
    "64",
    "--batch-size",
    "16",
];

/// Each trial equals a solo `clampnet train` of its command line, bit for bit (weights and the
/// optimizer's state): every restriction kind, two processes at once (`--jobs 2`), in each the trials
/// that can share a step trained as its models.
#[test]
fn every_trial_equals_a_solo_train_of_its_settings() {
    let _g = GPU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("solo");
    let grid = write_grid(&dir, EVERY_KIND);
    let out = dir.join("out").display().to_string();
    // two trials at a time, each in a process of its own
    let mut args = vec![
        "sweep", "run", &grid, "--out", &out, "--epochs", "2", "--jobs", "2",
    ];
    args.extend(SMALL);
    let o = clampnet(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let g = Grid::load(Path::new(&grid)).unwrap();
    assert_eq!(g.trials.len(), 9);
    let mut together = Vec::new();
    for t in &g.trials {
        let tdir = Path::new(&out).join("trials").join(&t.id);
        let result: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tdir.join("result.json")).unwrap())
                .unwrap();
        assert_eq!(result["epochs"].as_array().unwrap().len(), 2);
        assert_eq!(result["seed"], 5);
        let names: Vec<&str> = result["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names.len(),
            4,
            "every weight tensor's statistics: {names:?}"
        );
        assert!(result["test_accuracy"].as_f64().unwrap() > 0.0);
        if result["models_per_pass"] == 4 {
            together.push(t.index);
        }
        // the trial's own command line, run as a process of its own
        let command = std::fs::read_to_string(tdir.join("command.txt")).unwrap();
        let solo = dir.join(format!("{}.safetensors", t.id));
        let solo_args: Vec<String> = command
            .split_whitespace()
            .skip(2)
            .map(|a| {
                if a.ends_with("checkpoint.safetensors") {
                    solo.display().to_string()
                } else if a.ends_with("metrics.jsonl") {
                    dir.join(format!("{}.jsonl", t.id)).display().to_string()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let mut solo_cmd = vec!["train".to_string()];
        solo_cmd.extend(solo_args);
        let refs: Vec<&str> = solo_cmd.iter().map(|s| s.as_str()).collect();
        let o = clampnet(&refs);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            tensors(&tdir.join("checkpoint.safetensors")) == tensors(&solo),
            "trial {} ({}) is bit-identical to its solo run",
            t.id,
            t.label
        );
    }
    // job 0 has trials 0, 2, 4, 6, 8 and job 1 trials 1, 3, 5, 7. A tensor without a constraint goes
    // with any: job 0 trains the penalties (0, 2), clip (4) and non_neg (8) as one step; max_norm (6)
    // cannot share the kernel's pass with the clip, so it trains alone. Job 1 trains its four at once.
    assert_eq!(
        together,
        [0, 1, 2, 3, 4, 5, 7, 8],
        "trials trained four per pass"
    );
}

/// kill -9 at any moment loses at most the epoch in progress; a rerun finishes the sweep with the
/// results an uninterrupted sweep gives. Deleted results are retrained, and only those.
#[test]
fn a_killed_sweep_resumes_and_deleted_results_retrain_alone() {
    let _g = GPU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("kill");
    let grid = write_grid(
        &dir,
        "seeds = [0, 1]\n[axes]\n\"model.layers.0.kernel_regularizer.l2\" = [0.0, 0.01]\n",
    );
    let run = |out: &str| {
        let mut args = vec![
            "sweep",
            "run",
            &grid,
            "--out",
            out,
            "--epochs",
            "3",
            "--limit-train",
            "1200",
            "--limit-test",
            "64",
        ];
        args.extend(["--batch-size", "32"]);
        clampnet(&args)
    };
    let straight = dir.join("straight").display().to_string();
    let o = run(&straight);
    assert!(o.status.success(), "{}", stderr(&o));

    let killed = dir.join("killed").display().to_string();
    let g = Grid::load(Path::new(&grid)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clampnet"))
        .args([
            "sweep",
            "run",
            &grid,
            "--out",
            &killed,
            "--epochs",
            "3",
            "--limit-train",
            "1200",
            "--limit-test",
            "64",
            "--batch-size",
            "32",
        ])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // kill it once the second trial has its first epoch's checkpoint but no result
    let second = Path::new(&killed).join("trials").join(&g.trials[1].id);
    let t0 = std::time::Instant::now();
    let mid_trial =
        || second.join("checkpoint.safetensors").exists() && !second.join("result.json").exists();
    while !mid_trial() {
        assert!(
            t0.elapsed().as_secs() < 120,
            "the sweep never reached trial 2"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let o = run(&killed);
    assert!(o.status.success(), "{}", stderr(&o));
    for t in &g.trials {
        let a = Path::new(&straight).join("trials").join(&t.id);
        let b = Path::new(&killed).join("trials").join(&t.id);
        assert!(
            tensors(&a.join("checkpoint.safetensors"))
                == tensors(&b.join("checkpoint.safetensors")),
            "trial {}: killed and resumed equals uninterrupted",
            t.id
        );
        let epochs = |d: &Path| -> Vec<f64> {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("result.json")).unwrap())
                    .unwrap();
            v["epochs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["test_loss"].as_f64().unwrap())
                .collect()
        };
        assert_eq!(
            epochs(&a),
            epochs(&b),
            "trial {}: one line per epoch, equal",
            t.id
        );
    }

    // delete two results: exactly those two retrain
    let mut mtimes = BTreeMap::new();
    for t in &g.trials {
        let p = Path::new(&killed)
            .join("trials")
            .join(&t.id)
            .join("result.json");
        mtimes.insert(
            t.id.clone(),
            std::fs::metadata(&p).unwrap().modified().unwrap(),
        );
    }
    for t in [&g.trials[0], &g.trials[3]] {
        let d = Path::new(&killed).join("trials").join(&t.id);
        std::fs::remove_file(d.join("result.json")).unwrap();
        std::fs::remove_file(d.join("checkpoint.safetensors")).unwrap();
    }
    let o = run(&killed);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sweep: 2 trials trained, 2 already finished, 0 failed"),
        "{}",
        stderr(&o)
    );
    for t in &g.trials {
        let p = Path::new(&killed)
            .join("trials")
            .join(&t.id)
            .join("result.json");
        let retrained = std::fs::metadata(&p).unwrap().modified().unwrap() != mtimes[&t.id];
        assert_eq!(retrained, t.index == 0 || t.index == 3, "trial {}", t.index);
    }
}

/// A trial that fails is named, the sweep goes on and exits non-zero; the same command retries it.
#[test]
fn failed_trials_are_named_and_retried() {
    let _g = GPU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("fail");
    // 96 examples with validation_split 0.995 leave none to train on: an error at run time
    let grid = write_grid(
        &dir,
        "[axes]\n\"training.validation_split\" = [0.25, 0.995]\n",
    );
    let out = dir.join("out").display().to_string();
    let mut args = vec!["sweep", "run", &grid, "--out", &out, "--epochs", "1"];
    args.extend(SMALL);
    let o = clampnet(&args);
    assert_eq!(o.status.code(), Some(1));
    let g = Grid::load(Path::new(&grid)).unwrap();
    let bad = &g.trials[1].id;
    assert!(
        stderr(&o).contains(&format!("1 trial failed: {bad}")),
        "{}",
        stderr(&o)
    );
    let failed = Path::new(&out).join("trials").join(bad).join("failed.json");
    let f: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&failed).unwrap()).unwrap();
    assert!(
        f["error"]
            .as_str()
            .unwrap()
            .contains("validation_split 0.995"),
        "{f}"
    );
    assert!(Path::new(&out)
        .join("trials")
        .join(&g.trials[0].id)
        .join("result.json")
        .exists());
    let o = clampnet(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("0 trials trained, 1 already finished, 1 failed"),
        "the failed trial is retried, the finished one skipped: {}",
        stderr(&o)
    );
}

/// A `.keras` base: keys into Keras' JSON, the file's weights as every trial's initial weights.
#[test]
fn a_keras_file_is_a_base_too() {
    let _g = GPU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("keras");
    let grid = dir.join("grid.toml");
    std::fs::write(
        &grid,
        format!(
            "base = \"{}\"\nseeds = [1]\n[axes]\n\"config.layers.1.config.kernel_regularizer.config.l1\" = [0.0, 0.05]\n",
            repo("tests/fixtures/keras/reference_l1l2.keras")
        ),
    )
    .unwrap();
    let g = Grid::load(&grid).unwrap();
    assert_eq!(
        g.trials[1].label,
        "config.kernel_regularizer.config.l1=0.05"
    );
    let out = dir.join("out").display().to_string();
    let grid = grid.display().to_string();
    let mut args = vec!["sweep", "run", &grid, "--out", &out, "--epochs", "1"];
    args.extend(SMALL);
    let o = clampnet(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    for t in &g.trials {
        let d = Path::new(&out).join("trials").join(&t.id);
        let command = std::fs::read_to_string(d.join("command.txt")).unwrap();
        assert!(
            command.contains("config.json")
                && command.contains("--init ")
                && command.contains("reference_l1l2.keras"),
            "{command}"
        );
        let report = std::fs::read_to_string(d.join("result.json")).unwrap();
        let l1 = t.settings.values().next().unwrap().as_f64().unwrap();
        assert!(
            report.contains(&format!("l1({l1})")) || l1 == 0.0,
            "{report}"
        );
    }
}

/// A Kubernetes Indexed Job's pods get `JOB_COMPLETION_INDEX` alone: with `--shards N` each runs its
/// shard, and together they give the results of one local sweep, bit for bit.
#[test]
fn indexed_job_pods_split_the_grid_by_job_completion_index() {
    let _g = GPU.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempdir("k8s");
    let grid = write_grid(
        &dir,
        "seeds = [0, 1, 2]\n[axes]\n\"model.layers.0.kernel_constraint\" = [\"none\", \"non_neg\"]\n",
    );
    let flags = [
        "--epochs",
        "1",
        "--limit-train",
        "64",
        "--limit-test",
        "32",
        "--batch-size",
        "16",
    ];
    let pods = dir.join("pods").display().to_string();
    for i in 0..2 {
        let mut args = vec!["sweep", "run", &grid, "--out", &pods, "--shards", "2"];
        args.extend(flags);
        let o = Command::new(env!("CARGO_BIN_EXE_clampnet"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("3 of 6 trials in shard {i}/2")),
            "{}",
            stderr(&o)
        );
    }
    let local = dir.join("local").display().to_string();
    let mut args = vec!["sweep", "run", &grid, "--out", &local];
    args.extend(flags);
    let o = clampnet(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    for t in &Grid::load(Path::new(&grid)).unwrap().trials {
        let ckpt = |d: &str| {
            tensors(
                &Path::new(d)
                    .join("trials")
                    .join(&t.id)
                    .join("checkpoint.safetensors"),
            )
        };
        assert!(ckpt(&pods) == ckpt(&local), "trial {}", t.id);
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(&pods)
                    .join("trials")
                    .join(&t.id)
                    .join("result.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            r["scheduler"]["job_completion_index"],
            (t.index % 2).to_string()
        );
    }
}
