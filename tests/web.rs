//! The page (`web/`: clampnet's library built to wasm, on the browser's WebGPU) in real headless
//! browsers: Chromium (SwiftShader) and Firefox ESR (lavapipe).
//!
//! - It trains a few steps of the reference model with restrictions, from the fixed init of seed 0,
//!   across an epoch's end (test evaluation, next epoch's order), and its weights and test metrics
//!   match the native run of the same steps on this machine's adapter within 1e-4.
//! - Bad input (a config error, a file that is not IDX, files that are not a dataset) shows the command
//!   line's own message in the page, which then still trains; a browser without WebGPU says so.
//! - Chromium takes a screenshot of the page after training: `target/web-page.png` (the README shows
//!   a copy, `docs/web-page.png`).
//!
//! The wasm build (`scripts/web.sh build`) is made first; it installs what it needs from Debian's
//! packages and crates.io. The test is skipped, saying why, only where that or the browsers cannot be
//! installed (not root). It runs once per suite (not on the GL pass).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clampnet::config::Config;
use clampnet::data;
use clampnet::gpu::KernelSet;
use clampnet::model::{init_weights, ModelPlan};
use clampnet::restrict::{Preset, Restrictions};
use clampnet::trainer::{epoch_order, Setup, Trainer};
use common::browser::{self, run_browser, run_browser_then};
use serde_json::Value;

const PRESET: &str = "combo";
const LIMIT: usize = 512;
const STEPS: usize = 24;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `scripts/web.sh build`; Err: why it cannot run here.
fn build() -> Result<(), String> {
    // a stalled install or build fails the test instead of hanging the suite
    let out = Command::new("timeout")
        .args(["1500", "bash"])
        .arg(root().join("scripts/web.sh"))
        .arg("build")
        .output()
        .map_err(|e| format!("scripts/web.sh does not start: {e}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Ok(()),
        Some(3) => Err(format!(
            "the wasm toolchain cannot be installed here:\n{log}"
        )),
        Some(124) => panic!("scripts/web.sh build ran past 25 minutes:\n{log}"),
        _ => panic!("scripts/web.sh build failed:\n{log}"),
    }
}

/// Test metrics at each epoch's end: (epoch, loss, accuracy).
type EpochTests = Vec<(usize, f64, f64)>;

/// The native run of the page's scripted pass: the same config, data, init and steps.
fn native(kernel_set: KernelSet) -> (clampnet::checkpoint::Weights, EpochTests) {
    let (ctx, _lock) = common::gpu();
    let mut cfg = Config::reference();
    let plan = ModelPlan::new(&cfg.model).unwrap();
    cfg.restrictions = Restrictions::preset(
        <Preset as clap::ValueEnum>::from_str(PRESET, true).unwrap(),
        &plan,
    );
    let mut ds = data::load_embedded_sample().unwrap();
    ds.train.truncate(LIMIT);
    let mut setup = Setup::new(
        plan.clone(),
        cfg.restrictions.clone(),
        cfg.optimizer,
        cfg.batch_size,
    );
    setup.seed = cfg.seed;
    setup.kernel_set = Some(kernel_set);
    let weights = init_weights(&plan, cfg.seed);
    let mut t = Trainer::new(ctx, setup, &ds.train, &ds.test, &weights).unwrap();
    let per_epoch = t.steps_per_epoch();
    let (mut epoch, mut step, mut done, mut tests) = (1, 0, 0, Vec::new());
    while done < STEPS {
        let order = epoch_order(ds.train.len(), cfg.seed, epoch, cfg.shuffle);
        let end = (step + STEPS - done).min(per_epoch);
        let s = t
            .train_range(epoch, &order, step, end, &|| false, &mut |_| {})
            .unwrap();
        done += s.steps;
        step = s.next_step;
        if s.completed {
            let m = t.evaluate().unwrap();
            tests.push((epoch, m.loss, m.accuracy));
            epoch += 1;
            step = 0;
        }
    }
    (t.weights().unwrap(), tests)
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("clampnet-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn auto_url(server: &browser::Server, query: &str) -> String {
    format!("{}index.html?post=/result&{query}", server.url)
}

fn check_training(browser: &str, r: &Value) {
    assert!(
        r["error"].is_null(),
        "{browser}: the page failed: {}",
        r["error"]
    );
    let set = KernelSet::parse(r["gpu"]["kernel_set"].as_str().unwrap())
        .unwrap()
        .unwrap();
    let last = r["history"]
        .as_array()
        .and_then(|h| h.last())
        .cloned()
        .unwrap_or_default();
    eprintln!(
        "{browser}: adapter {}, {} kernel set, {STEPS} steps in {:.1} s (pipelines included), last chunk {:.0} images/s",
        r["gpu"]["adapter"],
        set.name(),
        r["seconds"].as_f64().unwrap_or(f64::NAN),
        last["images_per_second"].as_f64().unwrap_or(f64::NAN)
    );
    let (expected, tests) = native(set);
    let page = r["weights"].as_array().expect("weights");
    assert_eq!(page.len(), expected.len(), "{browser}: tensors");
    let mut worst = 0.0f64;
    for ((name, shape, want), got) in expected.iter().zip(page) {
        assert_eq!(got["name"].as_str(), Some(name.as_str()), "{browser}");
        let got_shape: Vec<usize> = serde_json::from_value(got["shape"].clone()).unwrap();
        assert_eq!(&got_shape, shape, "{browser}: {name}");
        let got: Vec<f32> = serde_json::from_value(got["values"].clone()).unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let d = (*g as f64 - *w as f64).abs();
            worst = worst.max(d);
            assert!(
                d <= 1e-4,
                "{browser}: {name}[{i}] = {g} in the page, {w} natively"
            );
        }
    }
    let page_tests: Vec<&Value> = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["test"].is_null())
        .collect();
    assert_eq!(page_tests.len(), tests.len(), "{browser}: epochs evaluated");
    for (p, (epoch, loss, acc)) in page_tests.iter().zip(&tests) {
        assert_eq!(p["epoch"].as_u64(), Some(*epoch as u64));
        let (pl, pa) = (
            p["test"]["loss"].as_f64().unwrap(),
            p["test"]["accuracy"].as_f64().unwrap(),
        );
        assert!(
            (pl - loss).abs() <= 1e-4,
            "{browser}: test loss {pl} vs {loss}"
        );
        assert!(
            (pa - acc).abs() <= 1e-4,
            "{browser}: test accuracy {pa} vs {acc}"
        );
    }
    eprintln!("{browser}: largest weight difference to the native run {worst:.2e}");
    check_downloads(browser, r, page);
}

/// The page's downloads: the checkpoint in safetensors and .keras holds the page's weights, and the
/// command line resumes the safetensors one where the page stopped.
fn check_downloads(browser: &str, r: &Value, page: &[Value]) {
    let d = std::env::temp_dir().join(format!("clampnet-web-{}-{browser}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    for name in ["clampnet.safetensors", "clampnet.keras"] {
        let bytes: Vec<u8> = serde_json::from_value(r["files"][name].clone()).expect(name);
        let path = d.join(name);
        std::fs::write(&path, bytes).unwrap();
        let (weights, meta) = clampnet::files::load_checkpoint(&path, None)
            .unwrap_or_else(|e| panic!("{browser}: {name}: {e}"));
        assert_eq!(
            meta.optimizer_steps,
            Some(STEPS as u64),
            "{browser}: {name}"
        );
        assert_eq!(
            (meta.epoch, meta.epoch_step),
            (Some(1), Some(8)),
            "{browser}: {name}"
        );
        for w in page {
            let n = w["name"].as_str().unwrap();
            let got = &weights.iter().find(|t| t.0 == n).expect(n).2;
            let want: Vec<f32> = serde_json::from_value(w["values"].clone()).unwrap();
            assert_eq!(got, &want, "{browser}: {name}: {n}");
        }
    }
    // the page's data: the embedded sample, as IDX files
    let sample = data::load_embedded_sample().unwrap();
    let at = d.join("data");
    std::fs::create_dir_all(&at).unwrap();
    for (split, prefix) in [(&sample.train, "train"), (&sample.test, "t10k")] {
        data::write_idx_gz(
            split,
            split.len(),
            &at.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &at.join(format!("{prefix}-labels-idx1-ubyte.gz")),
        )
        .unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_clampnet"))
        .args(["train", "--resume"])
        .arg(d.join("clampnet.safetensors"))
        .arg("--data")
        .arg(&at)
        .args(["--epochs", "2", "--limit-test", "100"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{browser}: the command line does not resume the page's checkpoint:\n{err}"
    );
    assert!(
        err.contains("resuming at epoch 2 step 8"),
        "{browser}: {err}"
    );
    eprintln!("{browser}: the page's .safetensors and .keras hold its weights; `clampnet train --resume` goes on from epoch 2 step 8");
    let _ = std::fs::remove_dir_all(&d);
}

/// What the page shows for `what`: the command line's message, as `clampnet` prints it.
fn cli_message(e: clampnet::Error) -> String {
    format!("error: {e}")
}

fn check_errors(browser: &str, r: &Value, bad_config: &str) {
    assert!(
        r["error"].is_null(),
        "{browser}: the page failed: {}",
        r["error"]
    );
    let config = clampnet::files::Source::Toml(bad_config.into())
        .parse("the config")
        .unwrap_err();
    assert_eq!(
        r["config_error"].as_str(),
        Some(cli_message(config).as_str()),
        "{browser}"
    );
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            "train-images-idx3-ubyte".into(),
            b"this is not an IDX file".to_vec(),
        ),
        ("train-labels-idx1-ubyte".into(), vec![0; 8]),
        ("t10k-images-idx3-ubyte".into(), vec![0; 8]),
        ("t10k-labels-idx1-ubyte".into(), vec![0; 8]),
    ];
    let data = data::load_idx_files(&files, 10).unwrap_err();
    assert_eq!(
        r["data_error"].as_str(),
        Some(cli_message(data).as_str()),
        "{browser}"
    );
    let missing = data::load_idx_files(&[("notes.txt".into(), vec![0; 3])], 10).unwrap_err();
    assert_eq!(
        r["missing_error"].as_str(),
        Some(cli_message(missing).as_str()),
        "{browser}"
    );
    assert!(
        !r["after"].is_null(),
        "{browser}: the page did not train after the errors"
    );
    assert_eq!(
        r["error_shown_after"],
        Value::Bool(false),
        "{browser}: an error stayed shown"
    );
    eprintln!(
        "{browser}: shown in the page:\n  {}\n  {}\n  {}",
        r["config_error"], r["data_error"], r["missing_error"]
    );
}

#[test]
fn the_page_trains_like_native_and_shows_errors_in_chromium_and_firefox() {
    let Some((chromium, firefox)) = browser::for_test() else {
        return;
    };
    if let Err(why) = build() {
        eprintln!("skipped: {why}");
        return;
    }
    let d = dir();
    browser::firefox_profile(&d.join("firefox"), true);
    browser::firefox_profile(&d.join("firefox-plain"), false);
    let web = root().join("web");
    let train_query = format!("auto=train&preset={PRESET}&limit={LIMIT}&steps={STEPS}&chunk=2");
    let bad_config = "[model]\ninput = [28, 28]\n";
    let errors_query = format!(
        "auto=errors&bad_config={}",
        "%5Bmodel%5D%0Ainput%20%3D%20%5B28%2C%2028%5D%0A"
    );

    // Chromium: training, held for the screenshot taken once the page has POSTed its result
    let shot = root().join("target/web-page.png");
    let _ = std::fs::remove_file(&shot);
    {
        let s = browser::serve(
            web.clone(),
            HashMap::new(),
            "<img src=\"/hold\" alt=\"\" hidden>",
        );
        let mut c = browser::chromium(&chromium, &d.join("chromium"), &auto_url(&s, &train_query));
        c.arg(format!("--screenshot={}", shot.display()))
            .args(["--window-size=1280,1180", "--hide-scrollbars"]);
        let r = run_browser_then(
            c,
            &s.results,
            "chromium",
            std::time::Duration::from_secs(20),
        );
        check_training("chromium", &r);
    }
    {
        let s = browser::serve(web.clone(), HashMap::new(), "");
        let c = browser::chromium(&chromium, &d.join("chromium"), &auto_url(&s, &errors_query));
        check_errors(
            "chromium",
            &run_browser(c, &s.results, "chromium"),
            bad_config,
        );
    }
    for (query, check) in [(&train_query, 0), (&errors_query, 1)] {
        let s = browser::serve(web.clone(), HashMap::new(), "");
        let c = browser::firefox(&firefox, &d.join("firefox"), &auto_url(&s, query));
        let r = run_browser(c, &s.results, "firefox-esr");
        if check == 0 {
            check_training("firefox-esr", &r);
        } else {
            check_errors("firefox-esr", &r, bad_config);
        }
    }
    {
        let s = browser::serve(web, HashMap::new(), "");
        let c = browser::firefox(
            &firefox,
            &d.join("firefox-plain"),
            &auto_url(&s, &errors_query),
        );
        let r = run_browser(c, &s.results, "firefox-esr without WebGPU");
        let msg = r["no_webgpu"]
            .as_str()
            .expect("the page says it has no WebGPU");
        assert!(
            msg.starts_with("error: this browser offers no WebGPU"),
            "{msg}"
        );
        eprintln!("firefox-esr without WebGPU: {msg}");
    }
    let _ = std::fs::remove_dir_all(&d);
    eprintln!(
        "screenshot: {} ({})",
        shot.display(),
        if shot.is_file() {
            "written"
        } else {
            "not written"
        }
    );
}
