//! Layer twins: conv2d, max-pool, dense, softmax cross-entropy, batch gather.

/// Conv2D shapes (stride 1, square kernel, `pad` rows/columns of zeros on each side).
#[derive(Clone, Copy, Debug)]
pub struct ConvDims {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub k: usize,
    pub pad: usize,
}

impl ConvDims {
    /// `valid` (pad 0) or `same` (pad (k-1)/2) output size.
    pub fn new(
        batch: usize,
        in_h: usize,
        in_w: usize,
        in_c: usize,
        out_c: usize,
        k: usize,
        same: bool,
    ) -> Self {
        let pad = if same { (k - 1) / 2 } else { 0 };
        let (out_h, out_w) = if same {
            (in_h, in_w)
        } else {
            (in_h - k + 1, in_w - k + 1)
        };
        ConvDims {
            batch,
            in_h,
            in_w,
            in_c,
            out_h,
            out_w,
            out_c,
            k,
            pad,
        }
    }
    fn xi(&self, n: usize, h: usize, w: usize, c: usize) -> usize {
        ((n * self.in_h + h) * self.in_w + w) * self.in_c + c
    }
    fn yi(&self, n: usize, i: usize, j: usize, o: usize) -> usize {
        ((n * self.out_h + i) * self.out_w + j) * self.out_c + o
    }
    fn ki(&self, di: usize, dj: usize, c: usize, o: usize) -> usize {
        ((di * self.k + dj) * self.in_c + c) * self.out_c + o
    }
    /// input position read by output (i, j) at kernel tap (di, dj), if inside the image
    fn tap(&self, i: usize, j: usize, di: usize, dj: usize) -> Option<(usize, usize)> {
        let h = (i + di).checked_sub(self.pad)?;
        let w = (j + dj).checked_sub(self.pad)?;
        (h < self.in_h && w < self.in_w).then_some((h, w))
    }
}

/// y[n,i,j,o] = act(b[o] + sum x[n, i+di-pad, j+dj-pad, c] * K[di,dj,c,o])      x NHWC, K (k,k,in,out)
pub fn conv2d_forward(d: &ConvDims, x: &[f64], k: &[f64], b: &[f64], relu: bool) -> Vec<f64> {
    let mut y = vec![0.0; d.batch * d.out_h * d.out_w * d.out_c];
    for n in 0..d.batch {
        for i in 0..d.out_h {
            for j in 0..d.out_w {
                for o in 0..d.out_c {
                    let mut acc = b[o];
                    for di in 0..d.k {
                        for dj in 0..d.k {
                            if let Some((h, w)) = d.tap(i, j, di, dj) {
                                for c in 0..d.in_c {
                                    acc += x[d.xi(n, h, w, c)] * k[d.ki(di, dj, c, o)];
                                }
                            }
                        }
                    }
                    y[d.yi(n, i, j, o)] = if relu { acc.max(0.0) } else { acc };
                }
            }
        }
    }
    y
}

/// dL/dpre from dL/dy: relu'(pre) = 1 where y > 0, else 0 (relu'(0) = 0).
pub fn activation_backward(y: &[f64], dy: &[f64], relu: bool) -> Vec<f64> {
    y.iter()
        .zip(dy)
        .map(|(&y, &g)| if !relu || y > 0.0 { g } else { 0.0 })
        .collect()
}

/// Returns (dK (k,k,in,out), db (out), dx NHWC).
pub fn conv2d_backward(
    d: &ConvDims,
    x: &[f64],
    k: &[f64],
    y: &[f64],
    dy: &[f64],
    relu: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dpre = activation_backward(y, dy, relu);
    let mut dk = vec![0.0; d.k * d.k * d.in_c * d.out_c];
    let mut db = vec![0.0; d.out_c];
    let mut dx = vec![0.0; x.len()];
    for n in 0..d.batch {
        for i in 0..d.out_h {
            for j in 0..d.out_w {
                for o in 0..d.out_c {
                    let g = dpre[d.yi(n, i, j, o)];
                    db[o] += g;
                    for di in 0..d.k {
                        for dj in 0..d.k {
                            if let Some((h, w)) = d.tap(i, j, di, dj) {
                                for c in 0..d.in_c {
                                    dk[d.ki(di, dj, c, o)] += x[d.xi(n, h, w, c)] * g;
                                    dx[d.xi(n, h, w, c)] += k[d.ki(di, dj, c, o)] * g;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dk, db, dx)
}

/// Max-pool shapes: k x k windows, stride k, `valid` (leftover rows/columns dropped).
#[derive(Clone, Copy, Debug)]
pub struct PoolDims {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub c: usize,
    pub k: usize,
}

impl PoolDims {
    pub fn out_h(&self) -> usize {
        self.in_h / self.k
    }
    pub fn out_w(&self) -> usize {
        self.in_w / self.k
    }
}

/// (y, argmax) where argmax = di * k + dj of the first maximum of each window in row-major order.
pub fn maxpool_forward(d: &PoolDims, x: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let (oh, ow) = (d.out_h(), d.out_w());
    let mut y = vec![0.0; d.batch * oh * ow * d.c];
    let mut arg = vec![0u32; y.len()];
    for n in 0..d.batch {
        for ph in 0..oh {
            for pw in 0..ow {
                for c in 0..d.c {
                    let mut best = f64::NEG_INFINITY;
                    let mut at = 0;
                    for di in 0..d.k {
                        for dj in 0..d.k {
                            let v = x
                                [((n * d.in_h + ph * d.k + di) * d.in_w + pw * d.k + dj) * d.c + c];
                            if v > best {
                                best = v;
                                at = di * d.k + dj;
                            }
                        }
                    }
                    let o = ((n * oh + ph) * ow + pw) * d.c + c;
                    y[o] = best;
                    arg[o] = at as u32;
                }
            }
        }
    }
    (y, arg)
}

/// dx: each window's gradient goes to its saved argmax; uncovered rows/columns get 0.
pub fn maxpool_backward(d: &PoolDims, argmax: &[u32], dy: &[f64]) -> Vec<f64> {
    let (oh, ow) = (d.out_h(), d.out_w());
    let mut dx = vec![0.0; d.batch * d.in_h * d.in_w * d.c];
    for n in 0..d.batch {
        for ph in 0..oh {
            for pw in 0..ow {
                for c in 0..d.c {
                    let o = ((n * oh + ph) * ow + pw) * d.c + c;
                    let a = argmax[o] as usize;
                    let (di, dj) = (a / d.k, a % d.k);
                    dx[((n * d.in_h + ph * d.k + di) * d.in_w + pw * d.k + dj) * d.c + c] += dy[o];
                }
            }
        }
    }
    dx
}

/// y = act(x @ W + b); x [B, IN], W [IN, OUT].
pub fn dense_forward(
    batch: usize,
    in_n: usize,
    out_n: usize,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    relu: bool,
) -> Vec<f64> {
    let mut y = vec![0.0; batch * out_n];
    for n in 0..batch {
        for o in 0..out_n {
            let mut acc = b[o];
            for i in 0..in_n {
                acc += x[n * in_n + i] * w[i * out_n + o];
            }
            y[n * out_n + o] = if relu { acc.max(0.0) } else { acc };
        }
    }
    y
}

/// Returns (dW [IN, OUT], db [OUT], dx [B, IN]).
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    batch: usize,
    in_n: usize,
    out_n: usize,
    x: &[f64],
    w: &[f64],
    y: &[f64],
    dy: &[f64],
    relu: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dpre = activation_backward(y, dy, relu);
    let mut dw = vec![0.0; in_n * out_n];
    let mut db = vec![0.0; out_n];
    let mut dx = vec![0.0; batch * in_n];
    for n in 0..batch {
        for o in 0..out_n {
            let g = dpre[n * out_n + o];
            db[o] += g;
            for i in 0..in_n {
                dw[i * out_n + o] += x[n * in_n + i] * g;
                dx[n * in_n + i] += w[i * out_n + o] * g;
            }
        }
    }
    (dw, db, dx)
}

/// Softmax + sparse categorical cross-entropy from logits: (ce per example, dlogits = (softmax - onehot)/B,
/// correct per example: first argmax == label).
pub fn softmax_xent(
    batch: usize,
    classes: usize,
    logits: &[f64],
    labels: &[u32],
) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
    let mut ce = vec![0.0; batch];
    let mut dl = vec![0.0; batch * classes];
    let mut correct = vec![false; batch];
    for n in 0..batch {
        let row = &logits[n * classes..(n + 1) * classes];
        let (mut arg, mut mx) = (0, row[0]);
        for (k, &v) in row.iter().enumerate().skip(1) {
            if v > mx {
                mx = v;
                arg = k;
            }
        }
        let sum: f64 = row.iter().map(|&v| (v - mx).exp()).sum();
        let y = labels[n] as usize;
        ce[n] = mx + sum.ln() - row[y];
        correct[n] = arg == y;
        for k in 0..classes {
            let p = (row[k] - mx).exp() / sum;
            dl[n * classes + k] = (p - if k == y { 1.0 } else { 0.0 }) / batch as f64;
        }
    }
    (ce, dl, correct)
}

/// x[r, p] = images[order[batch_index * full_batch + r], p] / 255, y[r] likewise.
pub fn gather_batch(
    images: &[u8],
    labels: &[u32],
    order: &[u32],
    batch_index: usize,
    full_batch: usize,
    rows: usize,
    per_image: usize,
) -> (Vec<f32>, Vec<u32>) {
    let mut x = vec![0f32; rows * per_image];
    let mut y = vec![0u32; rows];
    for r in 0..rows {
        let e = order[batch_index * full_batch + r] as usize;
        for p in 0..per_image {
            x[r * per_image + p] = images[e * per_image + p] as f32 / 255.0;
        }
        y[r] = labels[e];
    }
    (x, y)
}
