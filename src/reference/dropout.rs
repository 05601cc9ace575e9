//! Dropout's twin: the counter-based mask (the same hash as shaders/dropout.wgsl), forward and backward.

/// PCG's output permutation of an LCG step: a 32-bit hash (Jarzynski and Olano 2020).
pub fn pcg(v: u32) -> u32 {
    let s = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let w = ((s >> ((s >> 28) + 4)) ^ s).wrapping_mul(277803737);
    (w >> 22) ^ w
}

/// Element `i` of the step `step` (optimizer steps done) is kept.
pub fn dropout_keep(seed: u32, salt: u32, step: u32, i: u32, threshold: u32) -> bool {
    pcg(pcg(pcg(pcg(seed) ^ salt) ^ step) ^ i) >= threshold
}

/// `rate · 2^32`: an element is dropped when its hash is below it.
pub fn dropout_threshold(rate: f64) -> u32 {
    (rate * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

/// `1 / (1 − rate)` in double, rounded to f32 (TensorFlow's `tf.nn.dropout`).
pub fn dropout_scale(rate: f64) -> f32 {
    (1.0 / (1.0 - rate)) as f32
}

/// The mask's seed: the layer's own `seed` when set, else the run's, folded to 32 bits.
pub fn dropout_seed(run_seed: u64, layer_seed: Option<u64>) -> u32 {
    let s = layer_seed.unwrap_or(run_seed);
    (s as u32) ^ ((s >> 32) as u32)
}

/// The mask of `n` elements of a training step.
pub fn dropout_mask(seed: u32, salt: u32, step: u32, n: usize, rate: f64) -> Vec<bool> {
    let t = dropout_threshold(rate);
    (0..n)
        .map(|i| dropout_keep(seed, salt, step, i as u32, t))
        .collect()
}

/// `x · scale` where kept, else 0 (f32 scale, as the shader).
pub fn dropout_apply(x: &[f64], keep: &[bool], rate: f64) -> Vec<f64> {
    let scale = dropout_scale(rate) as f64;
    x.iter()
        .zip(keep)
        .map(|(&v, &k)| if k { v * scale } else { 0.0 })
        .collect()
}
