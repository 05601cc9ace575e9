// The GPU kernel set's dense forward (plain, and with the loss) with its 256-invocation sum done by
// subgroup operations (read after subgroups.wgsl, dense.wgsl, softmax_xent.wgsl and dense_loss.wgsl).
// Each subgroup adds its invocations' 16 partial sums with subgroupAdd; its first invocation writes them
// to workgroup memory at the subgroup's id; after one barrier, 4 invocations add the subgroups' results
// (8 of them on a 32-wide GPU). forward_gpu_sums needs 8 barrier-separated rounds of workgroup memory
// instead. The additions run in another order than the baseline's tree: the results agree to rounding,
// not bit for bit (tests/layers.rs, tests/trainer.rs).

// forward_gpu_sums with subgroups: example n's sums for outputs o0..o0 + 15, left in dense_lanes[0..4].
fn forward_gpu_sums_sg(n: u32, o0: u32, lid: u32, sg: vec3<u32>) {
    let id = sg.x;
    let count = sg.y;
    let lane = sg.z;
    let a = forward_gpu_partial(n, o0, lid);
    let s0 = subgroupAdd(a[0]);
    let s1 = subgroupAdd(a[1]);
    let s2 = subgroupAdd(a[2]);
    let s3 = subgroupAdd(a[3]);
    if (lane == 0u) {
        dense_lanes[id * 4u] = s0;
        dense_lanes[id * 4u + 1u] = s1;
        dense_lanes[id * 4u + 2u] = s2;
        dense_lanes[id * 4u + 3u] = s3;
    }
    workgroupBarrier();
    // invocation q < 4 owns quad q of every subgroup's result; subgroup 0's is summed into in place
    if (lid < 4u) {
        var t = dense_lanes[lid];
        for (var g = 1u; g < count; g++) {
            t += dense_lanes[g * 4u + lid];
        }
        dense_lanes[lid] = t;
    }
    workgroupBarrier();
}

// dense_forward_gpu with subgroups
@compute @workgroup_size(256)
fn dense_forward_gpu_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                        @builtin(subgroup_id) sg_id: u32, @builtin(num_subgroups) sg_count: u32,
                        @builtin(subgroup_invocation_id) sg_lane: u32) {
    let o0 = wg.x * 16u;
    let n = wg.y;
    forward_gpu_sums_sg(n, o0, lid, vec3<u32>(sg_id, sg_count, sg_lane));
    let o = o0 + lid;
    if (lid < 16u && o < P.out_n) {
        y[n * P.out_n + o] = forward_gpu_output(o0, o);
    }
}

// dense_forward_loss_gpu with subgroups
@compute @workgroup_size(256)
fn dense_forward_loss_gpu_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                             @builtin(subgroup_id) sg_id: u32, @builtin(num_subgroups) sg_count: u32,
                             @builtin(subgroup_invocation_id) sg_lane: u32) {
    let n = wg.y;
    forward_gpu_sums_sg(n, 0u, lid, vec3<u32>(sg_id, sg_count, sg_lane));
    if (lid == 0u) {
        loss_tail(n);
    }
}
