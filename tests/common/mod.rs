//! Shared test helpers: one GPU context per test binary (tests take a lock, so they never fight over a
//! software adapter), the tolerance rule, fixtures.
#![allow(dead_code)]

pub mod browser;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use clampnet::gpu::{Context, GpuOptions};

static CTX: OnceLock<Context> = OnceLock::new();
static LOCK: Mutex<()> = Mutex::new(());

/// The GPU context (WGPU_BACKEND / WGPU_ADAPTER_NAME respected) and a lock held for the test's duration.
pub fn gpu() -> (&'static Context, MutexGuard<'static, ()>) {
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = CTX.get_or_init(|| match Context::new(&GpuOptions::default()) {
        Ok(c) => {
            eprintln!("GPU tests on {}", clampnet::gpu::describe(&c.info));
            c
        }
        Err(e) => panic!("GPU tests need an adapter (CI installs Mesa lavapipe): {e}"),
    });
    (ctx, guard)
}

static CTX_SUBGROUPS: OnceLock<Context> = OnceLock::new();
static CTX_TILES: OnceLock<Context> = OnceLock::new();

/// A second context, opened with the opt-in subgroup kernels (`GpuOptions::subgroups`; its `subgroups`
/// is false where the adapter lacks the feature), and the same lock.
pub fn gpu_subgroups() -> (&'static Context, MutexGuard<'static, ()>) {
    gpu_with(
        &CTX_SUBGROUPS,
        GpuOptions {
            subgroups: true,
            ..Default::default()
        },
    )
}

/// A third context, opened with the GPU set's tiled kernels (`GpuOptions::gpu_tiles`), and the same
/// lock.
pub fn gpu_tiles() -> (&'static Context, MutexGuard<'static, ()>) {
    gpu_with(
        &CTX_TILES,
        GpuOptions {
            gpu_tiles: true,
            ..Default::default()
        },
    )
}

fn gpu_with(
    cell: &'static OnceLock<Context>,
    opts: GpuOptions,
) -> (&'static Context, MutexGuard<'static, ()>) {
    let (_, guard) = gpu();
    let ctx = cell.get_or_init(|| {
        Context::new(&opts).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
    });
    (ctx, guard)
}

/// The suite's GL pass (`WGPU_BACKEND=gl`): the tests of the opt-in GPU paths (`--gpu-tiles`,
/// `--subgroups`) run on the Vulkan pass only; on GL llvmpipe their K-model pipelines take minutes to
/// build, and the paths are for GPUs (naga's translation to GLSL is checked in tests/shaders.rs).
pub fn gl_pass() -> bool {
    std::env::var("WGPU_BACKEND").is_ok_and(|b| b.eq_ignore_ascii_case("gl"))
}

/// A small model with a `classes`-way dense head: 13 to 16 classes reach the tiles' fourth output quad,
/// 17 the kernels for wider heads.
pub fn wide_head(classes: usize) -> ModelSpec {
    use Activation::*;
    ModelSpec {
        input: [6, 6, 1],
        layers: vec![
            Conv2d::new(4, 3, Padding::Valid, Relu).into(),
            MaxPool2d::new(2).into(),
            Flatten::new().into(),
            Dense::new(classes, Softmax).into(),
        ],
        names: Vec::new(),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Tensors of a safetensors file by name.
pub fn load(name: &str) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let (w, _) = clampnet::checkpoint::load(&fixture(name)).expect("fixture loads");
    w.into_iter().map(|(n, s, v)| (n, (s, v))).collect()
}

/// The one tolerance rule: |a - e| <= atol + rtol * |e|. On failure, prints the first differing elements
/// and the largest difference.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], atol: f64, rtol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let mut bad = Vec::new();
    let mut max_diff = 0f64;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let d = (a as f64 - e as f64).abs();
        max_diff = max_diff.max(d);
        // NaN differences count as outside
        if d.is_nan() || d > atol + rtol * (e as f64).abs() {
            bad.push((i, a, e));
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad
            .iter()
            .take(6)
            .map(|(i, a, e)| format!("[{i}] got {a} expected {e}"))
            .collect();
        panic!(
            "{what}: {} of {} elements outside {atol} + {rtol}*|e| (max |diff| {max_diff:.3e}); first: {}",
            bad.len(),
            actual.len(),
            first.join(", ")
        );
    }
}

pub fn assert_close64(what: &str, actual: &[f64], expected: &[f64], atol: f64, rtol: f64) {
    let a: Vec<f32> = actual.iter().map(|&v| v as f32).collect();
    let e: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    assert_close(what, &a, &e, atol, rtol);
}

/// Deterministic pseudo-random numbers for test data (no dependency on the library's RNG).
pub struct TestRng(u64);
impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
    /// uniform in [-a, a)
    pub fn sym(&mut self, a: f32) -> f32 {
        (self.next_u32() as f32 / u32::MAX as f32 * 2.0 - 1.0) * a
    }
}

pub fn f32s(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub fn to_f32(b: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(b)
}

use clampnet::layers::{Conv2d, Dense, Flatten, MaxPool2d};
use clampnet::model::{Activation, ModelSpec, Padding};

/// Small models of odd sizes that use every layer kind: valid and same padding, stacked convs, RGB,
/// pooling with leftover rows, relu and linear, dense relu, softmax.
pub fn odd_models() -> Vec<ModelSpec> {
    use Activation::*;
    vec![
        ModelSpec {
            input: [9, 7, 1],
            layers: vec![
                Conv2d::new(5, 3, Padding::Valid, Relu).into(),
                MaxPool2d::new(2).into(),
                Flatten::new().into(),
                Dense::new(3, Softmax).into(),
            ],
            names: Vec::new(),
        },
        ModelSpec {
            input: [8, 9, 3],
            layers: vec![
                Conv2d::new(6, 3, Padding::Same, Relu).into(),
                MaxPool2d::new(2).into(),
                Conv2d::new(11, 3, Padding::Valid, Linear).into(),
                Flatten::new().into(),
                Dense::new(7, Relu).into(),
                Dense::new(4, Softmax).into(),
            ],
            names: Vec::new(),
        },
        ModelSpec {
            input: [6, 5, 1],
            layers: vec![
                Conv2d::new(4, 3, Padding::Same, Relu).into(),
                Conv2d::new(3, 2, Padding::Valid, Relu).into(),
                Flatten::new().into(),
                Dense::new(5, Softmax).into(),
            ],
            names: Vec::new(),
        },
    ]
}

/// A restriction of every kind, spread over the model's tensors.
pub fn every_restriction(plan: &clampnet::model::ModelPlan) -> clampnet::restrict::Restrictions {
    let mut res = clampnet::restrict::Restrictions::default();
    let kinds = [
        (
            Some(clampnet::restrict::Regularizer {
                l1: 0.01,
                l2: 0.0,
                proximal: false,
            }),
            vec![clampnet::restrict::Constraint::UnitNorm {
                axes: vec![0, 1, 2],
            }],
        ),
        (
            Some(clampnet::restrict::Regularizer {
                l1: 0.0,
                l2: 0.02,
                proximal: false,
            }),
            vec![clampnet::restrict::Constraint::NonNeg],
        ),
        (
            Some(clampnet::restrict::Regularizer {
                l1: 0.003,
                l2: 0.004,
                proximal: true,
            }),
            vec![clampnet::restrict::Constraint::ClipByValue {
                lo: -0.05,
                hi: 0.05,
            }],
        ),
        (
            None,
            vec![clampnet::restrict::Constraint::MaxNorm {
                max_value: 0.5,
                axes: vec![0],
            }],
        ),
        (
            None,
            vec![clampnet::restrict::Constraint::MinMaxNorm {
                min_value: 0.2,
                max_value: 0.4,
                rate: 0.6,
                axes: vec![0],
            }],
        ),
    ];
    for (i, p) in plan.params.iter().enumerate() {
        if i == 1 {
            // the tutorial's once-per-epoch clip, on the first bias
            res.entry(&p.name).epoch_constraints.push(
                clampnet::restrict::Constraint::ClipByValue {
                    lo: -0.002,
                    hi: 0.002,
                },
            );
        }
        let (reg, cons) = kinds[i % kinds.len()].clone();
        let e = res.entry(&p.name);
        e.regularizer = reg;
        // norm constraints with axes valid for this tensor's rank only
        e.constraints = cons
            .into_iter()
            .filter(|c| {
                !matches!(c, clampnet::restrict::Constraint::UnitNorm { .. }) || p.shape.len() == 4
            })
            .collect();
    }
    res
}
