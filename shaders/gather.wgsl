// Batch gather + normalise (one dispatch per step; gather_batch4 for GPUs, gather_batch16 for CPU
// adapters, gather_batch where per_image % 4 != 0), gather_batch's grid (ceil(per_image/64), rows):
//   x[r, p] = f32(images[perm[state.batch * full_batch + r], p]) / 255     r < rows, p < per_image
//             (read from a table of the 256 quotients, computed on the host)
//   y[r]    = labels[perm[state.batch * full_batch + r]]
// Images are stored on the GPU once, as u8 packed four to a u32 (little-endian byte order).
// The batch index comes from `state`, advanced on the GPU by loss.wgsl, so a step needs no upload.

struct GatherParams {
    rows: u32,        // examples in this batch (the last batch of an epoch may be short)
    full_batch: u32,  // the configured batch size: stride of batch index into perm
    per_image: u32,   // H * W * C
    _pad: u32,
}

struct State {
    step: u32,   // optimizer steps done (Keras `iterations`)
    batch: u32,  // batch index inside the current pass over the data
}

@group(0) @binding(0) var<uniform> P: GatherParams;
@group(0) @binding(1) var<storage, read> images: array<u32>;  // [N, per_image] u8, packed
@group(0) @binding(2) var<storage, read> labels: array<u32>;  // [N]
@group(0) @binding(3) var<storage, read> perm: array<u32>;    // [N] example order of this epoch
@group(0) @binding(4) var<storage, read> state: State;
@group(0) @binding(5) var<storage, read_write> x: array<f32>; // [rows, per_image]
@group(0) @binding(6) var<storage, read_write> y: array<u32>; // [rows]
// v / 255 for every byte value v, as the host (and numpy, for Keras) computes it: WGSL allows a division
// 2.5 ULP of error, and the NVIDIA Vulkan driver is 1 ULP off for some bytes (seen on an H100), so the
// inputs would differ from Keras' in the last bit. The table keeps them bit-exact on every adapter.
@group(0) @binding(7) var<uniform> byte_to_unit: array<vec4<f32>, 64>;
// x again, four pixels per element: gather_batch4 (per_image % 4 == 0, so an image starts on a word)
@group(0) @binding(8) var<storage, read_write> x4: array<vec4<f32>>;

fn unit(v: u32) -> f32 {
    return byte_to_unit[v >> 2u][v & 3u];
}

@compute @workgroup_size(64)
fn gather_batch(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = wg.x * 64u + lid;
    let r = wg.y;
    if (p >= P.per_image || r >= P.rows) {
        return;
    }
    let example = perm[state.batch * P.full_batch + r];
    let byte_index = example * P.per_image + p;
    let word = images[byte_index / 4u];
    let value = (word >> (8u * (byte_index % 4u))) & 0xffu;
    x[r * P.per_image + p] = unit(value);
    if (p == 0u) {
        y[r] = labels[example];
    }
}

// gather_batch where per_image % 4 == 0, grid (ceil(per_image/256), rows): one invocation per 4 pixels,
// a whole word of the image: one load and one store where gather_batch has four of each (llvmpipe runs
// every storage access lane by lane).
@compute @workgroup_size(64)
fn gather_batch4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let q = wg.x * 64u + lid;
    let r = wg.y;
    let quads = P.per_image / 4u;
    if (q >= quads || r >= P.rows) {
        return;
    }
    let example = perm[state.batch * P.full_batch + r];
    let word = images[example * quads + q];
    x4[r * quads + q] = vec4<f32>(unit(word & 0xffu), unit((word >> 8u) & 0xffu),
                                  unit((word >> 16u) & 0xffu), unit(word >> 24u));
    if (q == 0u) {
        y[r] = labels[example];
    }
}

// gather_batch4 with 4 words (16 pixels) per invocation over a 1-D grid of (row, word group), folded:
// grid (ceil(rows * ceil(per_image/16) / 64)). llvmpipe pays a fixed cost per workgroup, and
// gather_batch4's grid leaves lanes idle in every row's last workgroup: a quarter of the workgroups.
@compute @workgroup_size(64)
fn gather_batch16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let quads = P.per_image / 4u;
    let groups = (quads + 3u) / 4u;
    let g = (wg.y * nwg.x + wg.x) * 64u + lid;
    let r = g / groups;
    if (r >= P.rows) {
        return;
    }
    let q0 = (g % groups) * 4u;
    let example = perm[state.batch * P.full_batch + r];
    for (var q = q0; q < min(q0 + 4u, quads); q++) {
        let word = images[example * quads + q];
        x4[r * quads + q] = vec4<f32>(unit(word & 0xffu), unit((word >> 8u) & 0xffu),
                                      unit((word >> 16u) & 0xffu), unit(word >> 24u));
    }
    if (q0 == 0u) {
        y[r] = labels[example];
    }
}
