// Tiled shapes of the GPU kernel set's dense forward and weight gradient, for large batches (opt-in:
// `--gpu-tiles`; read after dense.wgsl, softmax_xent.wgsl and dense_loss.wgsl). OUT <= 16 (a classifier
// head). Each computes every output element with the operations of its untiled twin in the same order,
// so the results are bit-identical to it (tests/trainer.rs); only what is loaded once and shared changes:
// - the forward takes 4 examples per workgroup, so each load of a kernel row feeds 4 examples (the
//   untiled forward reads all of W once per example); the 4 sums are then reduced one after the other
//   in the untiled forward's tree;
// - the weight gradient stages 16 examples x 16 outputs of the incoming gradient in workgroup memory
//   (1 KiB), and each invocation keeps 4 outputs of one input row in registers: per example one
//   coalesced load of x and one broadcast read of workgroup memory feed 4 products (the untiled kernel:
//   two loads per product).

// 4 examples per workgroup of the tiled forward
const TILE_EXAMPLES: u32 = 4u;

// Example n0 + e's sums for outputs o0..o0 + 15 (e < 4), each lane's in the untiled order, into acc.
fn tiled_forward_sums(n0: u32, o0: u32, lid: u32) -> array<array<vec4<f32>, 4>, 4> {
    var acc: array<array<vec4<f32>, 4>, 4>;
    // rows past the batch repeat its last row: computed, never stored
    let last = P.batch - 1u;
    let xb = array<u32, 4>(min(n0, last) * P.in_n, min(n0 + 1u, last) * P.in_n,
                           min(n0 + 2u, last) * P.in_n, min(n0 + 3u, last) * P.in_n);
    for (var i = lid; i < P.in_n; i += 256u) {
        let k = kernel16(i, o0);
        for (var e = 0u; e < TILE_EXAMPLES; e++) {
            let v = x[xb[e] + i];
            acc[e][0] += v * k[0]; acc[e][1] += v * k[1]; acc[e][2] += v * k[2]; acc[e][3] += v * k[3];
        }
    }
    return acc;
}

// dense_forward_gpu, 4 examples per workgroup: grid (1, ceil(B/4)) (OUT <= 16)
@compute @workgroup_size(256)
fn dense_forward_tiled_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wg.y * TILE_EXAMPLES;
    let acc = tiled_forward_sums(n0, 0u, lid);
    for (var e = 0u; e < TILE_EXAMPLES; e++) {
        lanes_tree(acc[e], lid);
        let n = n0 + e;
        if (lid < P.out_n && n < P.batch) {
            y[n * P.out_n + lid] = forward_gpu_output(0u, lid);
        }
        // the stores read dense_lanes before the next example's tree writes it
        workgroupBarrier();
    }
}

// dense_forward_loss_gpu, 4 examples per workgroup: grid (1, ceil(B/4)). Its own loop, not one shared
// with a flag: an entry point's layout holds every binding it could touch, and the plain forward binds
// no loss buffers.
@compute @workgroup_size(256)
fn dense_forward_loss_tiled_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wg.y * TILE_EXAMPLES;
    let acc = tiled_forward_sums(n0, 0u, lid);
    for (var e = 0u; e < TILE_EXAMPLES; e++) {
        lanes_tree(acc[e], lid);
        let n = n0 + e;
        if (lid == 0u && n < P.batch) {
            loss_tail(n);
        }
        workgroupBarrier();
    }
}

// 16 examples x 16 outputs of the incoming gradient (relu' applied under GATE), as quads
var<workgroup> dense_dy_tile: array<vec4<f32>, 64>;

// grid (ceil((IN + 1) / 64)), folded; workgroups of 256 = 64 rows x 4 output quads (OUT <= 16). Row i,
// quad q: dW[i, 4q..4q+3] = sum over n of x[n, i] * dpre[n, 4q..] in example order; row IN is the bias
// gradient, sum over n of dpre[n, 4q..] (dense_backward_weight_gpu's sums, element for element).
@compute @workgroup_size(256)
fn dense_backward_weight_tiled_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                   @builtin(local_invocation_index) lid: u32) {
    let g = (wg.y * nwg.x + wg.x) * 256u + lid;
    let i = g / 4u;
    let q = g % 4u;
    var a = vec4<f32>(0.0);
    for (var n0 = 0u; n0 < P.batch; n0 += 16u) {
        // invocation lid stages example n0 + lid / 16, output lid % 16
        let tn = n0 + lid / 16u;
        let to = lid % 16u;
        var d = 0.0;
        if (tn < P.batch && to < P.out_n) {
            d = dpre_storage(tn * P.out_n + to);
        }
        // the previous tile's reads are done
        workgroupBarrier();
        dense_dy_tile[lid / 4u][lid % 4u] = d;
        workgroupBarrier();
        let m = min(16u, P.batch - n0);
        if (i < P.in_n) {
            for (var k = 0u; k < m; k++) {
                a += x[(n0 + k) * P.in_n + i] * dense_dy_tile[k * 4u + q];
            }
        } else {
            for (var k = 0u; k < m; k++) {
                a += dense_dy_tile[k * 4u + q];
            }
        }
    }
    for (var c = 0u; c < 4u; c++) {
        let o = q * 4u + c;
        if (o < P.out_n) {
            if (i < P.in_n) {
                dkernel[i * P.out_n + o] = a[c];
            } else if (i == P.in_n) {
                dbias[o] = a[c];
            }
        }
    }
}
