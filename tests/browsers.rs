//! Every kernel variant compiles in real headless browsers' WebGPU: Chromium (Tint on SwiftShader) and
//! Firefox ESR (naga on lavapipe). The test serves `web/kernels.html` and the kernels (every entry point
//! of `step::kernels()`, each variant with its pipeline constants) on 127.0.0.1, opens the page in the
//! browser, and takes the results it POSTs back: each variant's compile time, or its error.
//!
//! Chromium's compiler once grew its GPU process to about 14 GB on two conv weight-gradient kernels (10
//! and 8 patch rows spelled out as statements; now loops over arrays): a browser whose processes pass
//! 6 GB, or that sends nothing in 4 minutes, fails the test and is killed. The browsers are installed
//! from Debian's packages when missing (as root); the test is skipped, saying why, only where they
//! cannot be; it runs once per suite (not again on the GL pass: it tests the browsers' backends).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::browser::{self, run_browser};
use serde_json::{json, Value};

fn kernels_json() -> Value {
    let mut sources = BTreeMap::new();
    let mut kernels = Vec::new();
    for k in clampnet::step::kernels() {
        // the opt-in subgroup kernels need the optional feature, which the page does not ask for (and a
        // browser's WGSL compiler wants `enable subgroups;`, which naga refuses): the page runs baseline
        if k.shader.needs_subgroups() {
            continue;
        }
        sources.insert(k.shader.file, k.shader.source);
        for &gate in k.variants() {
            let constants: serde_json::Map<String, Value> = k
                .constants(gate)
                .into_iter()
                .map(|(n, v)| (n.to_string(), json!(v)))
                .collect();
            kernels.push(json!({
                "kernel": k.name, "entry": k.entry, "file": k.shader.file, "gate": gate,
                "constants": constants,
            }));
        }
    }
    json!({ "kernels": kernels, "sources": sources })
}

/// Serve `web/` and the kernels on 127.0.0.1: the page is `kernels.html`.
fn serve() -> browser::Server {
    let routes = HashMap::from([(
        "/kernels.json".to_string(),
        (
            "application/json".to_string(),
            kernels_json().to_string().into_bytes(),
        ),
    )]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let mut server = browser::serve(root, routes, "");
    server.url.push_str("kernels.html");
    server
}

#[test]
fn every_kernel_variant_compiles_in_chromium_and_firefox() {
    let Some((chromium, firefox)) = browser::for_test() else {
        return;
    };
    let expected = kernels_json()["kernels"].as_array().unwrap().len();
    let dir = std::env::temp_dir().join(format!("clampnet-browsers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    browser::firefox_profile(&dir.join("firefox"), true);

    let mut results = Vec::new();
    {
        let s = serve();
        let c = browser::chromium(&chromium, &dir.join("chromium"), &s.url);
        results.push(("chromium", run_browser(c, &s.results, "chromium")));
    }
    {
        let s = serve();
        let c = browser::firefox(&firefox, &dir.join("firefox"), &s.url);
        results.push(("firefox-esr", run_browser(c, &s.results, "firefox-esr")));
    }

    let mut failures = Vec::new();
    for (browser, r) in &results {
        eprintln!(
            "{browser}: adapter {}, {}",
            r["adapter"].as_str().unwrap_or("none"),
            r["userAgent"].as_str().unwrap_or("")
        );
        if let Some(e) = r["error"].as_str() {
            failures.push(format!("{browser}: {e}"));
        }
        let ks = r["kernels"].as_array().cloned().unwrap_or_default();
        if ks.len() != expected && r["error"].is_null() {
            failures.push(format!(
                "{browser}: {} of {expected} variants reported",
                ks.len()
            ));
        }
        let mut total = 0.0;
        for k in &ks {
            let name = k["kernel"].as_str().unwrap_or("?");
            let entry = k["entry"].as_str().unwrap_or("?");
            let ms = k["ms"].as_f64();
            total += ms.unwrap_or(0.0);
            match k["error"].as_str() {
                Some(e) => {
                    eprintln!("  {name:<40} {entry:<40} ERROR {e}");
                    failures.push(format!("{browser}: {name} ({entry}): {e}"));
                }
                None => eprintln!(
                    "  {name:<40} {entry:<40} {:>8.1} ms",
                    ms.unwrap_or(f64::NAN)
                ),
            }
        }
        eprintln!("  {browser}: {:.1} s compiling in all", total / 1e3);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "kernels that do not compile:\n{}",
        failures.join("\n")
    );
}
