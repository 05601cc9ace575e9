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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The most memory a browser's processes may take together.
const MEMORY_LIMIT: u64 = 6 << 30;

/// Resident memory of every process in process group `pgid`, from /proc.
fn group_rss(pgid: i32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        // SAFETY: getpgid only reads the process table
        .filter(|&pid| unsafe { libc::getpgid(pid) } == pgid)
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024)
        })
        .sum()
}

fn kernels_json() -> Value {
    let mut sources = BTreeMap::new();
    let mut kernels = Vec::new();
    for k in clampnet::step::kernels() {
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

/// Serve the page and the kernels on 127.0.0.1; the POSTed result arrives on the channel.
fn serve() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("web/kernels.html"))
            .unwrap();
    let kernels = kernels_json().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, kind, body) = if line.starts_with("POST") && path.starts_with("/result") {
                let mut body = vec![0u8; length];
                let _ = r.read_exact(&mut body);
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let _ = tx.send(v);
                }
                ("200 OK", "text/plain", String::new())
            } else if path.starts_with("/kernels.json") {
                ("200 OK", "application/json", kernels.clone())
            } else if path == "/" || path.starts_with("/?") {
                ("200 OK", "text/html; charset=utf-8", page.clone())
            } else {
                ("404 Not Found", "text/plain", String::new())
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, rx)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The browsers, installed from Debian's packages when missing (as root); Err: why they cannot be.
fn browsers() -> Result<(PathBuf, PathBuf), String> {
    if let (Some(c), Some(f)) = (which("chromium"), which("firefox-esr")) {
        return Ok((c, f));
    }
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "chromium and firefox-esr are not installed and this user cannot install them".into(),
        );
    }
    let install = || {
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "chromium",
                "firefox-esr",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        if !install() {
            return Err("the packages chromium and firefox-esr cannot be installed here".into());
        }
    }
    match (which("chromium"), which("firefox-esr")) {
        (Some(c), Some(f)) => Ok((c, f)),
        _ => Err("chromium or firefox-esr is still missing after the install".into()),
    }
}

/// Open `url` in a headless browser and take its result; the browser's whole process group is killed.
fn run_browser(mut cmd: Command, rx: &mpsc::Receiver<Value>, what: &str) -> Value {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let started = Instant::now();
    let pgid = child.id() as i32;
    let mut peak = 0;
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(v) => break Ok(v),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("the server stopped".to_string())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        peak = peak.max(group_rss(pgid));
        if peak > MEMORY_LIMIT {
            break Err(format!(
                "its processes took {:.1} GB",
                peak as f64 / (1u64 << 30) as f64
            ));
        }
        if started.elapsed() > Duration::from_secs(240) {
            break Err("it sent no result in 240 s".to_string());
        }
    };
    // SAFETY: signalling the process group this test created for the browser
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    result.unwrap_or_else(|why| panic!("{what} was stopped: {why}"))
}

#[test]
fn every_kernel_variant_compiles_in_chromium_and_firefox() {
    if std::env::var("WGPU_BACKEND").is_ok_and(|b| b.eq_ignore_ascii_case("gl")) {
        eprintln!("skipped on the GL backend: the browser test runs once, on the default pass");
        return;
    }
    let (chromium, firefox) = match browsers() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let expected = kernels_json()["kernels"].as_array().unwrap().len();
    let dir = std::env::temp_dir().join(format!("clampnet-browsers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("firefox")).unwrap();
    std::fs::write(
        dir.join("firefox/user.js"),
        "user_pref(\"dom.webgpu.enabled\", true);\nuser_pref(\"gfx.webgpu.ignore-blocklist\", true);\n\
         user_pref(\"browser.shell.checkDefaultBrowser\", false);\n",
    )
    .unwrap();

    let mut results = Vec::new();
    {
        let (url, rx) = serve();
        let mut c = Command::new(&chromium);
        c.args([
            "--headless=new",
            "--no-sandbox",
            "--enable-unsafe-webgpu",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg(&url);
        results.push(("chromium", run_browser(c, &rx, "chromium")));
    }
    {
        let (url, rx) = serve();
        let mut c = Command::new(&firefox);
        c.args(["-headless", "-no-remote", "-profile"])
            .arg(dir.join("firefox"))
            .arg(&url);
        results.push(("firefox-esr", run_browser(c, &rx, "firefox-esr")));
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
