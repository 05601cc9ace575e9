// Dropout (Keras' `Dropout(rate)`), with a counter-based mask: element i of a training step keeps its
// value when hash(seed, layer, step, i) >= threshold, so a mask is a function of the run's seed, the
// layer, the optimizer step (the step state's `step`: steps done) and the element, reproducible across
// runs, resumes and kernel sets, and never stored. threshold = rate * 2^32; scale = 1 / (1 - rate),
// computed in double and rounded to f32 as TensorFlow does.
//   dropout_forward   (training)   y = keep ? x * scale : 0
//   dropout_copy      (inference)  y = x
//   dropout_backward               dx = keep ? dy * scale : 0
// One invocation per element, grid folded (workgroups of 64).

struct DropoutParams {
    n: u32, threshold: u32, scale: f32, seed: u32,
    salt: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

struct State {
    step: u32,
    batch: u32,
}

@group(0) @binding(0) var<uniform> D: DropoutParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> state: State;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

// PCG's output permutation of an LCG step: a 32-bit hash (Jarzynski and Olano 2020).
fn pcg(v: u32) -> u32 {
    let s = v * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

fn keep(i: u32) -> bool {
    return pcg(pcg(pcg(pcg(D.seed) ^ D.salt) ^ state.step) ^ i) >= D.threshold;
}

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * 64u + lid;
}

@compute @workgroup_size(64)
fn dropout_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i >= D.n) {
        return;
    }
    y[i] = select(0.0, x[i] * D.scale, keep(i));
}

@compute @workgroup_size(64)
fn dropout_copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i >= D.n) {
        return;
    }
    y[i] = x[i];
}

@compute @workgroup_size(64)
fn dropout_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i >= D.n) {
        return;
    }
    dx[i] = select(0.0, dy[i] * D.scale, keep(i));
}
