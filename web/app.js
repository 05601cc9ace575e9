// The page: wires the controls to clampnet's wasm `Session` (web/src/lib.rs) and draws the curves,
// the conv filter grid and the restriction report. `?auto=train|errors` runs a scripted pass and POSTs
// its result to `?post=` (tests/web.rs); without it, the page waits for the user.
import init, { open_gpu, presets, examples, Session } from "./pkg/clampnet_web.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { session: null, stop: false, running: false, files: [], history: [], tests: [] };

function showError(msg) {
  const e = $("error");
  if (msg) {
    e.textContent = "error: " + msg;
    e.hidden = false;
  } else {
    e.textContent = "";
    e.hidden = true;
  }
}

function errorText(e) {
  return (e && e.message) ? e.message : String(e);
}

function setButtons() {
  const s = state.session, r = state.running;
  $("train").disabled = r;
  $("stop").disabled = !r;
  $("resume").disabled = r || !s || state.done;
  $("save-st").disabled = r || !s;
  $("save-keras").disabled = r || !s;
}

// ---- data -----------------------------------------------------------------------------------------
async function takeFiles(list) {
  const files = [];
  for (const f of list) {
    const name = f.webkitRelativePath || f.name;
    files.push({ name, bytes: new Uint8Array(await f.arrayBuffer()) });
  }
  state.files = files;
  $("data").textContent = files.length
    ? `Data: ${files.length} file(s): ${files.slice(0, 4).map((f) => f.name).join(", ")}${files.length > 4 ? ", …" : ""}`
    : "Data: the Fashion-MNIST sample embedded in clampnet (4,000 train / 1,000 test images).";
}

// Entries of a dropped folder, recursively, as Files with their relative paths.
async function dropped(items) {
  const out = [];
  const walk = async (entry, path) => {
    if (entry.isFile) {
      const file = await new Promise((ok, bad) => entry.file(ok, bad));
      Object.defineProperty(file, "webkitRelativePath", { value: path + entry.name });
      out.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, bad) => reader.readEntries(ok, bad));
        if (!batch.length) break;
        for (const e of batch) await walk(e, path + entry.name + "/");
      }
    }
  };
  // the item list is emptied once the drop handler yields: take every entry first
  const entries = [...items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry());
  for (const entry of entries) {
    if (entry) await walk(entry, "");
  }
  return out;
}

// ---- drawing --------------------------------------------------------------------------------------
function drawCurves() {
  const c = $("curves"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const h = state.history;
  const panels = [["loss", 0], ["accuracy", c.width / 2]];
  for (const [key, x0] of panels) {
    const w = c.width / 2 - 10, top = 18, bottom = c.height - 22, left = x0 + 42;
    const train = h.filter((p) => p.loss !== undefined).map((p) => [p.optimizer_steps, p[key]]);
    const test = state.tests.map((p) => [p.optimizer_steps, p[key]]);
    const all = train.concat(test);
    g.fillStyle = "#222";
    g.font = "12px sans-serif";
    g.fillText(key, x0 + 4, 12);
    if (!all.length) continue;
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    const xmax = Math.max(1, ...xs);
    let ymin = Math.min(...ys), ymax = Math.max(...ys);
    if (key === "accuracy") { ymin = Math.min(ymin, 0); ymax = Math.max(ymax, 1); }
    if (ymax - ymin < 1e-6) { ymax += 0.5; ymin -= 0.5; }
    const X = (v) => left + (v / xmax) * (w - 48);
    const Y = (v) => bottom - ((v - ymin) / (ymax - ymin)) * (bottom - top);
    g.strokeStyle = "#999";
    g.beginPath(); g.moveTo(left, top); g.lineTo(left, bottom); g.lineTo(left + w - 48, bottom); g.stroke();
    g.fillStyle = "#555";
    g.fillText(ymax.toFixed(2), x0 + 2, top + 4);
    g.fillText(ymin.toFixed(2), x0 + 2, bottom);
    g.fillText(`${xmax} steps`, left + w - 110, bottom + 16);
    g.strokeStyle = "#3070d0"; g.lineWidth = 1.5;
    g.beginPath();
    train.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
    g.stroke();
    g.fillStyle = "#d04030";
    for (const [x, y] of test) { g.beginPath(); g.arc(X(x), Y(y), 4, 0, 7); g.fill(); }
  }
}

// The first conv kernel (kh, kw, in, out): one cell per filter, its first input channel, on a
// blue-white-red scale symmetric about 0.
function drawFilters(weights) {
  const c = $("filters"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const k = weights.find((t) => t.shape.length === 4);
  if (!k) { $("filters-name").textContent = "(the model has no conv layer)"; return; }
  const [kh, kw, cin, cout] = k.shape;
  $("filters-name").textContent = `${k.name} (${k.shape.join("×")})`;
  const cols = Math.min(cout, 8), rows = Math.ceil(cout / cols);
  const cell = Math.floor(Math.min((c.width - 4) / cols, (c.height - 4) / rows)) - 4;
  const px = Math.max(1, Math.floor(cell / Math.max(kh, kw)));
  const at = (y, x, i, o) => k.values[((y * kw + x) * cin + i) * cout + o];
  let m = 1e-12;
  for (const v of k.values) m = Math.max(m, Math.abs(v));
  for (let o = 0; o < cout; o++) {
    const ox = 2 + (o % cols) * (cell + 4), oy = 2 + Math.floor(o / cols) * (cell + 4);
    for (let y = 0; y < kh; y++) {
      for (let x = 0; x < kw; x++) {
        const v = at(y, x, 0, o) / m;
        const r = v > 0 ? 255 : Math.round(255 * (1 + v));
        const b = v < 0 ? 255 : Math.round(255 * (1 - v));
        const gg = Math.round(255 * (1 - Math.abs(v)));
        g.fillStyle = `rgb(${r},${gg},${b})`;
        g.fillRect(ox + x * px, oy + y * px, px, px);
      }
    }
  }
}

async function refreshWeights() {
  const s = state.session;
  const weights = JSON.parse(await s.weights());
  drawFilters(weights);
  $("report").textContent = await s.report();
  return weights;
}

// ---- training -------------------------------------------------------------------------------------
// A new run; when the config or the data is refused, the previous run and its state stay as they were.
function startSession() {
  showError("");
  const limit = Number($("limit").value) || 0;
  const session = new Session($("config").value, $("preset").value, state.files, limit);
  state.session = session;
  state.history = [];
  state.tests = [];
  state.done = false;
  state.optimizerSteps = 0;
  setButtons();
  const sum = JSON.parse(session.summary());
  state.summary = sum;
  $("summary").textContent = [
    `${sum.parameters} parameters (${sum.layers.join(" → ")}), batch ${sum.batch_size}, ${sum.epochs} epoch(s) of ${sum.steps_per_epoch} steps, ${sum.kernel_set} kernel set`,
    `data: ${sum.data} (${sum.train} train, ${sum.test} test)`,
    "restrictions: " + (sum.restrictions.length ? "\n  " + sum.restrictions.join("\n  ") : "none"),
    ...sum.notes.map((n) => "note: " + n),
  ].join("\n");
  drawCurves();
}

// Train until the run is done, `maxSteps` optimizer steps are reached, or Stop.
async function trainLoop(chunk, maxSteps) {
  const s = state.session;
  state.running = true;
  state.stop = false;
  setButtons();
  try {
    const start = state.optimizerSteps || 0;
    let done = 0;
    while (!state.stop && !state.done && (maxSteps === undefined || done < maxSteps)) {
      const n = maxSteps === undefined ? chunk : Math.min(chunk, maxSteps - done);
      const p = JSON.parse(await s.train(n));
      if (p.loss === undefined) { state.done = true; break; }
      state.optimizerSteps = p.optimizer_steps;
      done = p.optimizer_steps - start;
      state.history.push(p);
      if (p.test) state.tests.push({ optimizer_steps: p.optimizer_steps, ...p.test });
      state.done = !!p.done;
      $("status").textContent =
        `epoch ${p.epoch}/${p.epochs}  step ${p.step}/${p.steps}  loss ${p.loss.toFixed(4)}  ` +
        `accuracy ${p.accuracy.toFixed(4)}  ${Math.round(p.images_per_second)} images/s` +
        (p.test ? `  test loss ${p.test.loss.toFixed(4)} accuracy ${p.test.accuracy.toFixed(4)}` : "");
      drawCurves();
      if (p.test) await refreshWeights();
    }
    await refreshWeights();
    if (state.done) $("status").textContent += "  (done)";
    else if (state.stop) $("status").textContent += "  (stopped: Resume continues)";
  } finally {
    state.running = false;
    setButtons();
  }
}

async function download(name) {
  try {
    const bytes = await state.session.checkpoint(name);
    const url = URL.createObjectURL(new Blob([bytes]));
    const a = document.createElement("a");
    a.href = url; a.download = name; a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (e) {
    showError(errorText(e));
  }
}

// ---- scripted passes (tests/web.rs) ---------------------------------------------------------------
async function post(result) {
  const to = params.get("post");
  if (to) await fetch(to, { method: "POST", body: JSON.stringify(result) });
}

async function autoTrain(gpu) {
  const steps = Number(params.get("steps") || "5");
  const t0 = performance.now();
  const chunk = Number(params.get("chunk") || "64");
  startSession();
  // stopped after a few steps, then resumed: the same session goes on
  const first = Math.min(3, steps);
  await trainLoop(chunk, first);
  await trainLoop(chunk, steps - first);
  const weights = await refreshWeights();
  const files = {};
  for (const name of ["clampnet.safetensors", "clampnet.keras"]) {
    files[name] = Array.from(await state.session.checkpoint(name));
  }
  return { gpu, weights, files, history: state.history, summary: state.summary,
           seconds: (performance.now() - t0) / 1e3 };
}

// Bad input, each through the page's controls: the message shown, and a run that works after them.
async function autoErrors(gpu) {
  const out = { gpu };
  const attempt = async (key, setup) => {
    setup();
    try { startSession(); out[key] = null; } catch (e) { showError(errorText(e)); out[key] = $("error").textContent; }
  };
  await attempt("config_error", () => { $("config").value = params.get("bad_config") || "[model]\ninput = [28, 28]\n"; });
  $("config").value = "";
  await attempt("data_error", () => {
    state.files = [{ name: "train-images-idx3-ubyte", bytes: new TextEncoder().encode("this is not an IDX file") },
                   { name: "train-labels-idx1-ubyte", bytes: new Uint8Array(8) },
                   { name: "t10k-images-idx3-ubyte", bytes: new Uint8Array(8) },
                   { name: "t10k-labels-idx1-ubyte", bytes: new Uint8Array(8) }];
  });
  await attempt("missing_error", () => { state.files = [{ name: "notes.txt", bytes: new Uint8Array(3) }]; });
  state.files = [];
  $("limit").value = "64";
  startSession();
  await trainLoop(2, 2);
  out.after = state.history.length ? state.history[state.history.length - 1] : null;
  out.error_shown_after = !$("error").hidden;
  return out;
}

// ---- start ----------------------------------------------------------------------------------------
async function main() {
  const mode = params.get("auto");
  if (!navigator.gpu) {
    const msg = "this browser offers no WebGPU (navigator.gpu is missing), so clampnet cannot train here. " +
      "Use a browser with WebGPU: Chrome or Edge 113+, Firefox 141+ (on Linux: set dom.webgpu.enabled), " +
      "or Safari 26; or run the command line: clampnet train";
    $("adapter").textContent = "no WebGPU";
    showError(msg);
    for (const b of document.querySelectorAll("button")) b.disabled = true;
    if (mode) await post({ no_webgpu: $("error").textContent });
    return;
  }
  await init();
  for (const p of JSON.parse(presets())) {
    const o = document.createElement("option");
    o.value = p.name === "none" ? "" : p.name;
    o.textContent = p.name === "none" ? "(the config's restrictions)" : `${p.name}: ${p.help}`;
    $("preset").append(o);
  }
  const ex = JSON.parse(examples());
  for (const e of ex) {
    const o = document.createElement("option");
    o.value = e.name; o.textContent = e.name;
    $("example").append(o);
  }
  $("example").onchange = () => {
    const e = ex.find((x) => x.name === $("example").value);
    $("config").value = e ? e.toml : "";
  };
  if (params.get("preset")) $("preset").value = params.get("preset");
  if (params.get("example")) { $("example").value = params.get("example"); $("example").onchange(); }
  if (params.get("limit")) $("limit").value = params.get("limit");

  let gpu;
  try {
    gpu = JSON.parse(await open_gpu(params.get("kernels") || "auto"));
    // what the browser tells of its adapter (wgpu's own adapter info is empty in a browser)
    const adapter = await navigator.gpu.requestAdapter();
    const info = adapter && adapter.info;
    if (info) {
      gpu.adapter = [info.vendor, info.architecture, info.device, info.description].filter((s) => s).join(" ") +
        (adapter.isFallbackAdapter || info.isFallbackAdapter ? " (fallback adapter)" : "");
    }
    $("adapter").textContent = `WebGPU adapter: ${gpu.adapter || "unnamed"}; ${gpu.kernel_set} kernel set`;
  } catch (e) {
    $("adapter").textContent = "no WebGPU adapter";
    showError(errorText(e) + "\nthis browser has WebGPU but gave no usable adapter: enable hardware acceleration, or use another browser");
    if (mode) await post({ error: $("error").textContent });
    return;
  }

  const guarded = (f) => async (...args) => {
    try { await f(...args); } catch (e) { showError(errorText(e)); }
  };
  $("files").onchange = guarded((ev) => takeFiles(ev.target.files));
  $("folder").onchange = guarded((ev) => takeFiles(ev.target.files));
  $("clear-data").onclick = guarded(() => takeFiles([]));
  const drop = $("drop");
  drop.ondragover = (ev) => { ev.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const items = ev.dataTransfer.items;
    guarded(async () => takeFiles(await dropped(items)))();
  };
  $("train").onclick = async () => {
    try { startSession(); await trainLoop(16); } catch (e) { showError(errorText(e)); }
  };
  $("stop").onclick = () => { state.stop = true; };
  $("resume").onclick = async () => {
    try { await trainLoop(16); } catch (e) { showError(errorText(e)); }
  };
  $("save-st").onclick = () => download("clampnet.safetensors");
  $("save-keras").onclick = () => download("clampnet.keras");
  setButtons();

  if (mode === "train" || mode === "errors") {
    let result;
    try {
      result = mode === "train" ? await autoTrain(gpu) : await autoErrors(gpu);
    } catch (e) {
      showError(errorText(e));
      result = { error: errorText(e) };
    }
    await post(result);
  }
}

main().catch((e) => { showError(errorText(e)); post({ error: errorText(e) }); });
