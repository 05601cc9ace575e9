//! Pooling twins (MaxPooling2D, AveragePooling2D and the global poolings): kh x kw windows, strides
//! (sh, sw), `pad_h` rows and `pad_w` columns before the input as TensorFlow pads `same` (the extra one
//! after). Windows cover only the input's cells: a max over them (the first maximum in row-major order
//! takes the gradient), an average divided by their count.

use crate::model::Padding;

/// Pooling shapes.
#[derive(Clone, Copy, Debug)]
pub struct PoolDims {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub c: usize,
    /// window
    pub kh: usize,
    pub kw: usize,
    /// strides
    pub sh: usize,
    pub sw: usize,
    /// cells of padding above and left
    pub pad_h: usize,
    pub pad_w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl PoolDims {
    /// A square window `k`, stride `s`, `padding`; None: a valid window larger than the input.
    pub fn new(
        batch: usize,
        (in_h, in_w, c): (usize, usize, usize),
        k: usize,
        s: usize,
        padding: Padding,
    ) -> Option<Self> {
        let (out_h, pad_h) = padding.window(in_h, k, s)?;
        let (out_w, pad_w) = padding.window(in_w, k, s)?;
        Some(PoolDims {
            batch,
            in_h,
            in_w,
            c,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            pad_h,
            pad_w,
            out_h,
            out_w,
        })
    }

    /// One window over the whole input (the global poolings).
    pub fn global(batch: usize, (in_h, in_w, c): (usize, usize, usize)) -> Self {
        PoolDims {
            batch,
            in_h,
            in_w,
            c,
            kh: in_h,
            kw: in_w,
            sh: 1,
            sw: 1,
            pad_h: 0,
            pad_w: 0,
            out_h: 1,
            out_w: 1,
        }
    }

    /// The input cells (rows, columns) of window (ph, pw): `di` in rows.0.., `dj` in cols.0.. index the
    /// window, the input row is ph*sh - pad_h + di.
    fn cells(&self, ph: usize, pw: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let span = |p: usize, s: usize, pad: usize, k: usize, n: usize| {
            let top = (p * s) as isize - pad as isize;
            let lo = (-top).max(0) as usize;
            let hi = (n as isize - top).clamp(0, k as isize) as usize;
            lo..hi.max(lo)
        };
        (
            span(ph, self.sh, self.pad_h, self.kh, self.in_h),
            span(pw, self.sw, self.pad_w, self.kw, self.in_w),
        )
    }

    fn xi(&self, n: usize, ph: usize, pw: usize, di: usize, dj: usize, c: usize) -> usize {
        let h = ph * self.sh + di - self.pad_h;
        let w = pw * self.sw + dj - self.pad_w;
        ((n * self.in_h + h) * self.in_w + w) * self.c + c
    }

    fn yi(&self, n: usize, ph: usize, pw: usize, c: usize) -> usize {
        ((n * self.out_h + ph) * self.out_w + pw) * self.c + c
    }
}

/// (y, argmax) where argmax = di * kw + dj of the first maximum of each window in row-major order.
pub fn maxpool_forward(d: &PoolDims, x: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let mut y = vec![0.0; d.batch * d.out_h * d.out_w * d.c];
    let mut arg = vec![0u32; y.len()];
    for n in 0..d.batch {
        for ph in 0..d.out_h {
            for pw in 0..d.out_w {
                let (rows, cols) = d.cells(ph, pw);
                for c in 0..d.c {
                    let mut best = f64::NEG_INFINITY;
                    let mut at = 0;
                    for di in rows.clone() {
                        for dj in cols.clone() {
                            let v = x[d.xi(n, ph, pw, di, dj, c)];
                            if v > best {
                                best = v;
                                at = di * d.kw + dj;
                            }
                        }
                    }
                    let o = d.yi(n, ph, pw, c);
                    y[o] = best;
                    arg[o] = at as u32;
                }
            }
        }
    }
    (y, arg)
}

/// dx: each window's gradient goes to its saved argmax (summed where windows overlap); cells no window
/// covers get 0.
pub fn maxpool_backward(d: &PoolDims, argmax: &[u32], dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; d.batch * d.in_h * d.in_w * d.c];
    for n in 0..d.batch {
        for ph in 0..d.out_h {
            for pw in 0..d.out_w {
                for c in 0..d.c {
                    let o = d.yi(n, ph, pw, c);
                    let a = argmax[o] as usize;
                    dx[d.xi(n, ph, pw, a / d.kw, a % d.kw, c)] += dy[o];
                }
            }
        }
    }
    dx
}

/// The mean of each window's input cells (padding is not counted).
pub fn avgpool_forward(d: &PoolDims, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; d.batch * d.out_h * d.out_w * d.c];
    for n in 0..d.batch {
        for ph in 0..d.out_h {
            for pw in 0..d.out_w {
                let (rows, cols) = d.cells(ph, pw);
                let count = (rows.len() * cols.len()) as f64;
                for c in 0..d.c {
                    let mut s = 0.0;
                    for di in rows.clone() {
                        for dj in cols.clone() {
                            s += x[d.xi(n, ph, pw, di, dj, c)];
                        }
                    }
                    y[d.yi(n, ph, pw, c)] = s / count;
                }
            }
        }
    }
    y
}

/// dx: each window's gradient divided by its cell count, to each of its cells.
pub fn avgpool_backward(d: &PoolDims, dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; d.batch * d.in_h * d.in_w * d.c];
    for n in 0..d.batch {
        for ph in 0..d.out_h {
            for pw in 0..d.out_w {
                let (rows, cols) = d.cells(ph, pw);
                let count = (rows.len() * cols.len()) as f64;
                for c in 0..d.c {
                    let g = dy[d.yi(n, ph, pw, c)] / count;
                    for di in rows.clone() {
                        for dj in cols.clone() {
                            dx[d.xi(n, ph, pw, di, dj, c)] += g;
                        }
                    }
                }
            }
        }
    }
    dx
}
