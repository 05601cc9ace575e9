//! Real headless browsers for the tests: Chromium and Firefox ESR from Debian's packages (installed when
//! missing, as root), a small HTTP server on 127.0.0.1 that serves a folder and takes the page's POSTed
//! result, and a browser run watched for memory and time, its whole process group killed at the end.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The most memory a browser's processes may take together.
pub const MEMORY_LIMIT: u64 = 6 << 30;

/// Resident memory of every process in process group `pgid`, from /proc.
pub fn group_rss(pgid: i32) -> u64 {
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

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The browsers, installed from Debian's packages when missing (as root); Err: why they cannot be.
pub fn browsers() -> Result<(PathBuf, PathBuf), String> {
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

/// The browsers for a browser test (Chromium, Firefox ESR); None (the test skips, saying why) on the GL
/// pass, where it does not run again, or where they cannot be installed.
pub fn for_test() -> Option<(PathBuf, PathBuf)> {
    if std::env::var("WGPU_BACKEND").is_ok_and(|b| b.eq_ignore_ascii_case("gl")) {
        eprintln!("skipped on the GL backend: the browser tests run once, on the default pass");
        return None;
    }
    browsers().map_err(|why| eprintln!("skipped: {why}")).ok()
}

/// Open `url` in a headless browser and take its result; the browser's whole process group is killed.
pub fn run_browser(cmd: Command, rx: &mpsc::Receiver<Value>, what: &str) -> Value {
    run_browser_then(cmd, rx, what, Duration::ZERO)
}

/// `run_browser`, leaving the browser up to `linger` after the result to exit by itself (a screenshot
/// is written as it exits).
pub fn run_browser_then(
    mut cmd: Command,
    rx: &mpsc::Receiver<Value>,
    what: &str,
    linger: Duration,
) -> Value {
    use std::os::unix::process::CommandExt;
    // CLAMPNET_BROWSER_LOG=1 shows the browser's output (and Firefox's console: `firefox_profile`)
    let log = std::env::var_os("CLAMPNET_BROWSER_LOG").is_some();
    let out = || if log { Stdio::inherit() } else { Stdio::null() };
    let mut child = cmd
        .process_group(0)
        .stdout(out())
        .stderr(out())
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
    let waited = Instant::now();
    while waited.elapsed() < linger && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling the process group this test created for the browser
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    result.unwrap_or_else(|why| panic!("{what} was stopped: {why}"))
}

/// A served folder: `url` is its root; POSTs to `/result` arrive on `results`. `GET /hold` answers only
/// once a result has arrived (the page includes it to hold its load event for a screenshot).
pub struct Server {
    pub url: String,
    pub results: mpsc::Receiver<Value>,
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// Serve `root` (and `routes`: path -> (content type, body), which win) on 127.0.0.1, one thread per
/// connection. `page_extra` is inserted before `</body>` of every HTML page.
pub fn serve(
    root: PathBuf,
    routes: HashMap<String, (String, Vec<u8>)>,
    page_extra: &str,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let arrived = Arc::new((Mutex::new(false), Condvar::new()));
    let routes = Arc::new(routes);
    let extra = page_extra.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(s) = stream else { continue };
            let (tx, arrived, routes, root, extra) = (
                tx.clone(),
                arrived.clone(),
                routes.clone(),
                root.clone(),
                extra.clone(),
            );
            std::thread::spawn(move || {
                let _ = answer(s, &root, &routes, &extra, &tx, &arrived);
            });
        }
    });
    Server { url, results: rx }
}

fn answer(
    mut s: std::net::TcpStream,
    root: &Path,
    routes: &HashMap<String, (String, Vec<u8>)>,
    extra: &str,
    tx: &mpsc::Sender<Value>,
    arrived: &(Mutex<bool>, Condvar),
) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    let (status, kind, body): (&str, String, Vec<u8>) = if line.starts_with("POST") {
        let mut body = vec![0u8; length];
        r.read_exact(&mut body)?;
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            let _ = tx.send(v);
        }
        let (m, cv) = arrived;
        *m.lock().unwrap() = true;
        cv.notify_all();
        ("200 OK", "text/plain".into(), Vec::new())
    } else if path == "/hold" {
        let (m, cv) = arrived;
        let guard = m.lock().unwrap();
        let _ = cv.wait_timeout_while(guard, Duration::from_secs(300), |done| !*done);
        // a 1x1 transparent GIF
        let gif = b"GIF89a\x01\0\x01\0\x80\0\0\0\0\0\xff\xff\xff!\xf9\x04\x01\0\0\0\0,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;";
        ("200 OK", "image/gif".into(), gif.to_vec())
    } else if let Some((kind, body)) = routes.get(&path) {
        ("200 OK", kind.clone(), body.clone())
    } else {
        let rel = if path.ends_with('/') {
            format!("{path}index.html")
        } else {
            path.clone()
        };
        let file = root.join(rel.trim_start_matches('/'));
        match std::fs::read(&file) {
            Ok(mut bytes) if !rel.contains("..") => {
                if rel.ends_with(".html") && !extra.is_empty() {
                    let text = String::from_utf8_lossy(&bytes)
                        .replace("</body>", &format!("{extra}</body>"));
                    bytes = text.into_bytes();
                }
                ("200 OK", content_type(&rel).into(), bytes)
            }
            _ => ("404 Not Found", "text/plain".into(), Vec::new()),
        }
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(&body)
}

/// A Firefox profile folder with WebGPU on (`webgpu`: false leaves it off, as a default Firefox ESR).
pub fn firefox_profile(dir: &Path, webgpu: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut prefs = String::from(
        "user_pref(\"browser.shell.checkDefaultBrowser\", false);\n\
         user_pref(\"devtools.console.stdout.content\", true);\n\
         user_pref(\"browser.sessionstore.resume_from_crash\", false);\n",
    );
    if webgpu {
        prefs.push_str(
            "user_pref(\"dom.webgpu.enabled\", true);\nuser_pref(\"gfx.webgpu.ignore-blocklist\", true);\n",
        );
    }
    std::fs::write(dir.join("user.js"), prefs).unwrap();
}

/// Chromium, headless with WebGPU (SwiftShader), on `url`.
pub fn chromium(exe: &Path, profile: &Path, url: &str) -> Command {
    let mut c = Command::new(exe);
    c.args([
        "--headless=new",
        "--no-sandbox",
        "--enable-unsafe-webgpu",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(url);
    c
}

/// Firefox ESR, headless, with `profile` (`firefox_profile`), on `url`.
pub fn firefox(exe: &Path, profile: &Path, url: &str) -> Command {
    let mut c = Command::new(exe);
    c.args(["-headless", "-no-remote", "-profile"])
        .arg(profile)
        .arg(url);
    c
}
