//! Conv2D twin (square kernel and stride, valid or same padding as TensorFlow pads), Keras layouts:
//! x NHWC, K (k, k, in, out).

use super::activation_backward;
use crate::model::Padding;

/// Conv2D shapes: square kernel `k`, stride `stride`, `pad_h` rows and `pad_w` columns of zeros before
/// the input (TensorFlow's `same` puts any extra one after).
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
    pub stride: usize,
    pub pad_h: usize,
    pub pad_w: usize,
}

impl ConvDims {
    /// Stride 1, `valid` or `same` (`same` with an odd kernel keeps the size).
    pub fn new(
        batch: usize,
        in_h: usize,
        in_w: usize,
        in_c: usize,
        out_c: usize,
        k: usize,
        same: bool,
    ) -> Self {
        let padding = if same { Padding::Same } else { Padding::Valid };
        Self::strided(batch, (in_h, in_w, in_c), out_c, k, 1, padding)
    }

    /// Any stride and padding; the layer checked that the window fits.
    pub fn strided(
        batch: usize,
        (in_h, in_w, in_c): (usize, usize, usize),
        out_c: usize,
        k: usize,
        stride: usize,
        padding: Padding,
    ) -> Self {
        let (out_h, pad_h) = padding.window(in_h, k, stride).expect("the window fits");
        let (out_w, pad_w) = padding.window(in_w, k, stride).expect("the window fits");
        ConvDims {
            batch,
            in_h,
            in_w,
            in_c,
            out_h,
            out_w,
            out_c,
            k,
            stride,
            pad_h,
            pad_w,
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
        let h = (i * self.stride + di).checked_sub(self.pad_h)?;
        let w = (j * self.stride + dj).checked_sub(self.pad_w)?;
        (h < self.in_h && w < self.in_w).then_some((h, w))
    }
}

/// y[n,i,j,o] = act(b[o] + sum x[n, i*s+di-pad_h, j*s+dj-pad_w, c] * K[di,dj,c,o])      x NHWC, K (k,k,in,out)
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
