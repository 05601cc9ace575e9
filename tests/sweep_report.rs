//! `sweep report` on synthetic sweeps (no GPU): the counts, the configuration table and its Pareto
//! column, the resubmit line, the plots, determinism (a Slurm run and a local run report the same), and
//! malformed or absent files.

use std::path::{Path, PathBuf};

use clampnet::sweep::report;
use serde_json::{json, Value};

const A: &str = "aaaa000001";
const B: &str = "bbbb000002";
const C: &str = "cccc000003";
const LABEL_A: &str = "l1=0.001, kernel_constraint=none";
const LABEL_B: &str = "l1=0, kernel_constraint=\"max_norm(2)\"";
const LABEL_C: &str = "baseline";

/// Where a trial ends up in a fixture.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Done,
    Failed,
    Missing,
}

/// One trial of the fixture: config, seed, final test accuracy, and the zero fractions of
/// conv2d.kernel and dense.kernel.
struct Spec {
    config: &'static str,
    seed: u64,
    accuracy: f64,
    zeros: (f64, f64),
    fate: Fate,
}

/// The plan: A over seeds 0-2 (indices 0-2, all done), B over seeds 0-3 (indices 3-6: 3 missing, 5
/// failed), C one seed (index 7). B is the most accurate, A the sparsest, C is beaten by B on both.
fn specs(complete: bool) -> Vec<Spec> {
    let fate = |f: Fate| if complete { Fate::Done } else { f };
    let s = |config, seed, accuracy, zeros, f| Spec {
        config,
        seed,
        accuracy,
        zeros,
        fate: fate(f),
    };
    vec![
        s(A, 0, 0.80, (0.30, 0.0), Fate::Done),
        s(A, 1, 0.82, (0.40, 0.0), Fate::Done),
        s(A, 2, 0.79, (0.35, 0.0), Fate::Done),
        s(B, 0, 0.85, (0.0, 0.02), Fate::Missing),
        s(B, 1, 0.86, (0.0, 0.02), Fate::Done),
        s(B, 2, 0.84, (0.0, 0.02), Fate::Failed),
        s(B, 3, 0.87, (0.0, 0.04), Fate::Done),
        s(C, 0, 0.78, (0.0, 0.0), Fate::Done),
    ]
}

fn label(config: &str) -> &'static str {
    match config {
        A => LABEL_A,
        B => LABEL_B,
        _ => LABEL_C,
    }
}

fn settings(config: &str) -> Value {
    match config {
        A => {
            json!({"model.layers.0.kernel_regularizer.l1": 0.001, "model.layers.0.kernel_constraint": "none"})
        }
        B => {
            json!({"model.layers.0.kernel_regularizer.l1": 0.0, "model.layers.0.kernel_constraint": "max_norm(2)"})
        }
        _ => json!({}),
    }
}

fn tensor(
    name: &str,
    shape: &[usize],
    zeros: f64,
    norms: Option<(f64, f64)>,
    restriction: Option<&str>,
) -> Value {
    let mut t = json!({
        "name": name, "shape": shape, "max_abs": 0.7, "zero_fraction": zeros,
        "filter_norm_min": norms.map(|n| n.0), "filter_norm_max": norms.map(|n| n.1),
    });
    if let Some(r) = restriction {
        t["restriction"] = json!(r);
        t["regularization_loss"] = json!(0.01);
    }
    t
}

/// The tensors after training: A restricts conv2d.kernel, B both kernels, C nothing.
fn tensors(s: &Spec) -> Value {
    let (conv_r, dense_r) = match s.config {
        A => (Some("kernel_regularizer L1(0.001)"), None),
        B => (
            Some("kernel_constraint MaxNorm(2)"),
            Some("kernel_constraint MaxNorm(2)"),
        ),
        _ => (None, None),
    };
    let scale = 1.0 + s.seed as f64 / 10.0;
    json!([
        tensor(
            "conv2d.kernel",
            &[3, 3, 1, 32],
            s.zeros.0,
            Some((0.5 * scale, 1.5 * scale)),
            conv_r
        ),
        tensor("conv2d.bias", &[32], 0.0, None, None),
        tensor(
            "dense.kernel",
            &[800, 10],
            s.zeros.1,
            Some((0.8, 1.9 * scale)),
            dense_r
        ),
    ])
}

fn trial_id(s: &Spec) -> String {
    format!("{}-s{}", s.config, s.seed)
}

/// How the machine shows in a result: everything the report must leave out.
struct Machine {
    host: &'static str,
    adapter: &'static str,
    slurm: Value,
    seconds: f64,
}

fn slurm_machine() -> Machine {
    Machine {
        host: "node-17.cluster",
        adapter: "NVIDIA H200 (Vulkan)",
        slurm: json!({"job_id": "98765", "array_job_id": "98760", "array_task_id": "2"}),
        seconds: 25.125,
    }
}

fn local_machine() -> Machine {
    Machine {
        host: "laptop-xyz",
        adapter: "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)",
        slurm: Value::Null,
        seconds: 61.75,
    }
}

fn result(index: usize, s: &Spec, m: &Machine) -> Value {
    let epoch = |e: u64, acc: f64| {
        json!({"epoch": e, "train_loss": 0.6, "train_accuracy": acc - 0.01, "test_loss": 1.0 - acc,
               "test_accuracy": acc, "seconds": m.seconds / 2.0, "train_seconds": 10.0,
               "images_per_second": 5000.0, "steps": 1875, "learning_rate": 0.001, "restrictions": tensors(s)})
    };
    json!({
        "id": trial_id(s), "config_id": s.config, "index": index, "label": label(s.config),
        "settings": settings(s.config), "seed": s.seed, "status": "done",
        "epochs": [epoch(1, s.accuracy - 0.05), epoch(2, s.accuracy)],
        "restrictions": tensors(s),
        "adapter": m.adapter, "kernel_set": "cpu", "version": "0.1.0", "host": m.host,
        "slurm": m.slurm, "seconds": m.seconds,
    })
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "clampnet-sweep-report-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// A sweep folder with the trials of `specs`.
fn fixture(tag: &str, specs: &[Spec], shards: Option<usize>, m: &Machine) -> PathBuf {
    let dir = tempdir(tag);
    let trials: Vec<Value> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"index": i, "id": trial_id(s), "config_id": s.config, "label": label(s.config),
                   "settings": settings(s.config), "seed": s.seed})
        })
        .collect();
    let mut sweep = json!({"grid": "sweeps/x.toml", "base": "configs/none.toml", "trials": trials});
    if let Some(n) = shards {
        sweep["shards"] = json!(n);
    }
    write_json(&dir.join("sweep.json"), &sweep);
    for (i, s) in specs.iter().enumerate() {
        let folder = dir.join("trials").join(trial_id(s));
        match s.fate {
            Fate::Done => write_json(&folder.join("result.json"), &result(i, s, m)),
            Fate::Failed => write_json(
                &folder.join("failed.json"),
                &json!({"id": trial_id(s), "error": "training stopped: the loss became non-finite\n  Lower --lr",
                        "host": m.host}),
            ),
            // an interrupted trial: only its metrics so far
            Fate::Missing => {
                std::fs::create_dir_all(&folder).unwrap();
                std::fs::write(folder.join("metrics.jsonl"), "{\"epoch\": 1}\n").unwrap();
            }
        }
    }
    dir
}

/// A small CSV reader: quoted fields with doubled quotes, no line breaks inside fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| {
            let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match (c, quoted) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        field.push('"');
                        chars.next();
                    }
                    ('"', _) => quoted = !quoted,
                    (',', false) => fields.push(std::mem::take(&mut field)),
                    _ => field.push(c),
                }
            }
            fields.push(field);
            fields
        })
        .collect()
}

/// The rows of a CSV as maps from the header.
fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let rows = parse_csv(&std::fs::read_to_string(path).unwrap());
    let head = &rows[0];
    rows[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.len(), head.len(), "{r:?}");
            head.iter().cloned().zip(r.iter().cloned()).collect()
        })
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn std(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn summarises_a_partial_sharded_sweep() {
    let specs = specs(false);
    let dir = fixture("partial", &specs, Some(4), &slurm_machine());
    let s = report::write(&dir).unwrap();
    assert_eq!(s.done, 6);
    assert_eq!(s.failed, vec![format!("{B}-s2")]);
    assert_eq!(s.missing, vec![format!("{B}-s0")]);
    // index 5 (failed) and index 3 (missing) on 4 shards
    assert_eq!(s.resubmit.as_deref(), Some("--array=1,3"));
    let out = dir.join("report");
    let names = [
        "report.md",
        "trials.csv",
        "trials.jsonl",
        "configs.csv",
        "accuracy_vs_zero_fraction.png",
        "accuracy_vs_filter_norm.png",
        "learning_curves.png",
    ];
    assert_eq!(s.files, names.map(|n| out.join(n)).to_vec());

    // configs.csv: by mean accuracy, mean ± sample std as computed here
    let rows = csv_rows(&out.join("configs.csv"));
    let order: Vec<&str> = rows.iter().map(|r| r["config_id"].as_str()).collect();
    assert_eq!(order, [B, A, C]);
    let accs = |c: &str| -> Vec<f64> {
        specs
            .iter()
            .filter(|s| s.config == c && s.fate == Fate::Done)
            .map(|s| s.accuracy)
            .collect()
    };
    for (row, c) in rows.iter().zip([B, A, C]) {
        let a = accs(c);
        assert_eq!(row["label"], label(c));
        assert_eq!(row["seeds"], a.len().to_string());
        assert_eq!(row["test_accuracy_mean"], format!("{:.4}", mean(&a)));
        let sd = if a.len() > 1 {
            format!("{:.4}", std(&a))
        } else {
            String::new()
        };
        assert_eq!(row["test_accuracy_std"], sd, "{c}");
        let loss: Vec<f64> = a.iter().map(|x| 1.0 - x).collect();
        assert_eq!(row["test_loss_mean"], format!("{:.4}", mean(&loss)));
    }
    // sparsity: A restricts conv2d.kernel only, B both kernels, C nothing
    assert_eq!(
        rows[1]["zero_fraction_mean"],
        format!("{:.4}", mean(&[0.30, 0.40, 0.35]))
    );
    assert_eq!(
        rows[0]["zero_fraction_mean"],
        format!("{:.4}", mean(&[0.0, mean(&[0.02, 0.04])]))
    );
    assert_eq!(rows[2]["zero_fraction_mean"], "0.0000");
    // the filter-norm range over seeds: B's done seeds are 1 and 3
    assert_eq!(
        rows[0]["conv2d.kernel.filter_norm_min"],
        format!("{:.4}", 0.5 * 1.1)
    );
    assert_eq!(
        rows[0]["conv2d.kernel.filter_norm_max"],
        format!("{:.4}", 1.5 * 1.3)
    );
    assert!(
        !rows[0].contains_key("conv2d.bias.zero_fraction_mean"),
        "bias is never restricted"
    );
    // B is the most accurate, A the sparsest, C is beaten by B on both
    let pareto: Vec<&str> = rows.iter().map(|r| r["pareto"].as_str()).collect();
    assert_eq!(pareto, ["yes", "yes", ""]);

    // trials.csv: every trial of the plan, in index order
    let trials = csv_rows(&out.join("trials.csv"));
    let status: Vec<&str> = trials.iter().map(|r| r["status"].as_str()).collect();
    assert_eq!(
        status,
        ["done", "done", "done", "missing", "done", "failed", "done", "done"]
    );
    assert_eq!(trials[1]["label"], LABEL_A);
    assert_eq!(trials[4]["label"], LABEL_B);
    assert_eq!(trials[1]["test_accuracy"], "0.82");
    assert_eq!(trials[1]["epochs"], "2");
    assert_eq!(trials[0]["conv2d.kernel.zero_fraction"], "0.3");
    assert_eq!(trials[0]["host"], "node-17.cluster");
    assert_eq!(trials[3]["test_accuracy"], "");
    assert_eq!(
        trials[5]["error"],
        "training stopped: the loss became non-finite Lower --lr"
    );

    // trials.jsonl: the finished results, compact, in index order
    let jsonl = read(&out.join("trials.jsonl"));
    let ids: Vec<String> = jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let want: Vec<String> = specs
        .iter()
        .filter(|s| s.fate == Fate::Done)
        .map(trial_id)
        .collect();
    assert_eq!(ids, want);

    // report.md
    let md = read(&out.join("report.md"));
    assert!(
        md.contains("6 of 8 trials done, 1 failed, 1 missing"),
        "{md}"
    );
    let sbatch = format!("sbatch --array=1,3 {}", dir.join("sweep.sbatch").display());
    assert!(md.contains(&sbatch), "{md}");
    assert!(md.contains("## Pareto front"), "{md}");
    assert!(
        md.contains(&format!(
            "| `{B}-s2` | {LABEL_B} | 2 | training stopped: the loss became non-finite |"
        )),
        "{md}"
    );
    assert!(
        !md.contains("Lower --lr"),
        "only the first line of an error: {md}"
    );
    assert!(
        md.contains(&format!("| `{B}-s0` | {LABEL_B} | 0 |")),
        "{md}"
    );
    for p in &names[4..] {
        assert!(md.contains(&format!("]({p})")), "{p} not linked: {md}");
    }
    let table_a = md.lines().position(|l| l.contains(LABEL_A)).unwrap();
    let table_b = md.lines().position(|l| l.contains(LABEL_B)).unwrap();
    assert!(table_b < table_a, "sorted by accuracy: {md}");
    for text in [&md, &read(&out.join("configs.csv"))] {
        for banned in [
            "seconds", "node-17", "H200", "98765", "98760", "25.125", "12.5625",
        ] {
            assert!(!text.contains(banned), "{banned:?} in {text}");
        }
    }

    // plots: 900 x 600 PNGs
    for p in &s.files[4..] {
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", p.display());
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 900);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 600);
    }
    // no temporary file left behind
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(names.contains(&name.as_str()), "stray {name}");
    }

    // twice gives the same report
    let again = report::write(&dir).unwrap();
    assert_eq!(again, s);
    assert_eq!(read(&out.join("report.md")), md);
    for f in ["configs.csv", "trials.csv", "trials.jsonl"] {
        let first = std::fs::read(out.join(f)).unwrap();
        report::write(&dir).unwrap();
        assert_eq!(std::fs::read(out.join(f)).unwrap(), first, "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_slurm_run_and_a_local_run_report_the_same() {
    let slurm = fixture("slurm", &specs(true), Some(4), &slurm_machine());
    let local = fixture("local", &specs(true), None, &local_machine());
    let (a, b) = (
        report::write(&slurm).unwrap(),
        report::write(&local).unwrap(),
    );
    assert_eq!((a.done, a.resubmit.as_deref()), (8, None));
    assert_eq!((b.done, b.resubmit.as_deref()), (8, None));
    for f in ["report.md", "configs.csv"] {
        assert_eq!(
            read(&slurm.join("report").join(f)),
            read(&local.join("report").join(f)),
            "{f}"
        );
    }
    let md = read(&slurm.join("report").join("report.md"));
    assert!(md.contains("nothing to resubmit"), "{md}");
    // the trial table does keep the machine
    assert_ne!(
        read(&slurm.join("report").join("trials.csv")),
        read(&local.join("report").join("trials.csv"))
    );
    std::fs::remove_dir_all(&slurm).unwrap();
    std::fs::remove_dir_all(&local).unwrap();
}

#[test]
fn a_malformed_result_is_a_failed_trial_with_its_reason() {
    let specs = specs(false);
    let dir = fixture("malformed", &specs, None, &local_machine());
    let bad = dir.join("trials").join(format!("{A}-s1"));
    std::fs::write(bad.join("result.json"), "{\"id\": \"truncated").unwrap();
    // a result that is not a result, and a result beside a failed.json (the result wins)
    write_json(
        &dir.join("trials")
            .join(format!("{A}-s2"))
            .join("result.json"),
        &json!({"id": format!("{A}-s2"), "epochs": []}),
    );
    write_json(
        &dir.join("trials")
            .join(format!("{C}-s0"))
            .join("failed.json"),
        &json!({"id": format!("{C}-s0"), "error": "an earlier attempt"}),
    );
    let s = report::write(&dir).unwrap();
    assert_eq!(s.done, 4);
    assert_eq!(
        s.failed,
        [format!("{A}-s1"), format!("{A}-s2"), format!("{B}-s2")]
    );
    assert_eq!(s.missing, [format!("{B}-s0")]);
    assert_eq!(s.resubmit, None, "no shard count known");
    let trials = csv_rows(&dir.join("report").join("trials.csv"));
    assert_eq!(trials[1]["status"], "failed");
    assert!(
        trials[1]["error"].contains("result.json does not parse"),
        "{:?}",
        trials[1]
    );
    assert!(trials[2]["error"].contains("no epochs"), "{:?}", trials[2]);
    assert_eq!(trials[7]["status"], "done");
    let md = read(&dir.join("report").join("report.md"));
    assert!(
        md.contains(&format!(
            "| `{A}-s1` | {LABEL_A} | 1 | result.json does not parse"
        )),
        "{md}"
    );
    let rerun = format!("clampnet sweep run sweeps/x.toml --out {}", dir.display());
    assert!(md.contains(&rerun), "{md}");
    let rows = csv_rows(&dir.join("report").join("configs.csv"));
    let a = rows.iter().find(|r| r["config_id"] == A).unwrap();
    assert_eq!(
        (a["seeds"].as_str(), a["test_accuracy_std"].as_str()),
        ("1", "")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_single_trial_and_no_finished_trial_draw_without_panicking() {
    let one = [Spec {
        config: C,
        seed: 0,
        accuracy: 0.5,
        zeros: (0.0, 0.0),
        fate: Fate::Done,
    }];
    let dir = fixture("single", &one, Some(1), &local_machine());
    let s = report::write(&dir).unwrap();
    assert_eq!((s.done, s.files.len()), (1, 7));
    let md = read(&dir.join("report").join("report.md"));
    assert!(
        md.contains("| 1 | baseline | `cccc000003` | 1 | 0.5000 ± – |"),
        "{md}"
    );

    // the same plan, nothing finished yet: no plots (and the earlier ones are gone)
    std::fs::remove_dir_all(dir.join("trials")).unwrap();
    let s = report::write(&dir).unwrap();
    assert_eq!((s.done, s.missing.len(), s.files.len()), (0, 1, 4));
    assert_eq!(s.resubmit.as_deref(), Some("--array=0"));
    assert!(!dir.join("report").join("learning_curves.png").exists());
    let md = read(&dir.join("report").join("report.md"));
    assert!(md.contains("no trial has finished yet"), "{md}");
    assert_eq!(read(&dir.join("report").join("trials.jsonl")), "");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_folder_without_a_plan_is_an_error_naming_sweep_json() {
    let dir = tempdir("empty");
    let e = report::write(&dir).unwrap_err().to_string();
    assert!(e.contains("sweep.json") && e.contains("--out"), "{e}");
    std::fs::write(dir.join("sweep.json"), "{\"trials\": 3}").unwrap();
    let e = report::write(&dir).unwrap_err().to_string();
    assert!(e.contains("sweep.json") && e.contains("trials"), "{e}");
    std::fs::write(dir.join("sweep.json"), "not json").unwrap();
    let e = report::write(&dir).unwrap_err().to_string();
    assert!(e.contains("sweep.json"), "{e}");
    std::fs::write(dir.join("sweep.json"), r#"{"trials": [{"id": "../x"}]}"#).unwrap();
    let e = report::write(&dir).unwrap_err().to_string();
    assert!(e.contains("../x"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn array_specs_compress_runs() {
    assert_eq!(clampnet::sweep::array_spec(&[3, 0, 2]), "0,2-3");
    assert_eq!(clampnet::sweep::array_spec(&[]), "");
    assert_eq!(clampnet::sweep::array_spec(&[5]), "5");
    assert_eq!(
        clampnet::sweep::array_spec(&[1, 2, 3, 7, 9, 10, 10]),
        "1-3,7,9-10"
    );
}
