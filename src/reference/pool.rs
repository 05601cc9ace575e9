//! MaxPool2D twin: k x k windows, stride k, valid padding; the first maximum of a window in row-major order.

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
