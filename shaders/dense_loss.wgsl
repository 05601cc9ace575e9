// The loss fused into the forward of a dense last op of at most 16 outputs (read after dense.wgsl and
// softmax_xent.wgsl): each example's logits are kept in registers as the forward writes them, and the
// same invocation computes softmax_xent.wgsl's cross-entropy, correctness and dL/dlogits from them, so a
// step has no separate loss dispatch. The arithmetic is the unfused kernels', operation for operation:
// the results are bit-identical (tests/trainer.rs).

@group(0) @binding(10) var<storage, read> labels: array<u32>;          // [B]
@group(0) @binding(11) var<storage, read_write> dlogits: array<f32>;   // [B, K]: this op's dy
@group(0) @binding(12) var<storage, read_write> per_example: array<f32>; // [B, 2]: ce, correct
@group(0) @binding(17) var<storage, read> class_weights: array<f32>;   // [K]
@group(0) @binding(18) var<uniform> LP: LossParams;

// the example's logits (K <= 16), as the forward computed them
var<private> row: array<f32, 16>;

fn loss_logit(n: u32, k: u32) -> f32 {
    return row[k];
}

// CPU kernel set, after dense_forward(4): grid (ceil(B/16)), one invocation per example: its outputs
// reduced from the chunks' partial sums, as dense_forward_reduce does each, then its loss.
@compute @workgroup_size(16)
fn dense_forward_reduce_loss(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = wg.x * 16u + lid;
    if (n >= P.batch) {
        return;
    }
    let total = P.batch * P.out_n;
    for (var o = 0u; o < P.out_n; o++) {
        let e = n * P.out_n + o;
        let v = reduced_output(e, total);
        y[e] = v;
        row[o] = v;
    }
    softmax_xent_row(n);
}

// GPU kernel set: grid (1, B), dense_forward_gpu's workgroup per example, whose first invocation then
// computes the example's loss.
@compute @workgroup_size(256)
fn dense_forward_loss_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = wg.y;
    forward_gpu_sums(n, 0u, lid);
    if (lid == 0u) {
        loss_tail(n);
    }
}

// Example n's outputs from the sums forward_gpu_sums left, then its loss (one invocation).
fn loss_tail(n: u32) {
    for (var o = 0u; o < P.out_n; o++) {
        let v = forward_gpu_output(0u, o);
        y[n * P.out_n + o] = v;
        row[o] = v;
    }
    softmax_xent_row(n);
}
