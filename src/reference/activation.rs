//! The activation layers' twin (the codes of shaders/activation.wgsl): f(x) and f'(x) from x and y.

/// f(x) for the function `code` (0 relu, 1 linear, 2 tanh, 3 sigmoid, 4 elu, 5 leaky_relu).
pub fn activation(code: u32, alpha: f64, x: f64) -> f64 {
    match code {
        0 => x.max(0.0),
        2 => x.tanh(),
        3 => 1.0 / (1.0 + (-x).exp()),
        4 => {
            if x > 0.0 {
                x
            } else {
                alpha * (x.exp() - 1.0)
            }
        }
        5 => {
            if x > 0.0 {
                x
            } else {
                alpha * x
            }
        }
        _ => x,
    }
}

/// A layer's own elementwise activation (`epilogue`: code, parameter) over its linear outputs, in place.
pub fn apply_epilogue(epilogue: Option<(u32, f32)>, y: &mut [f64]) {
    if let Some((code, alpha)) = epilogue {
        apply_activation(code, alpha as f64, y);
    }
}

/// The gradient of a layer's linear outputs from that of its activated outputs `y`.
pub fn epilogue_backward(epilogue: Option<(u32, f32)>, y: &[f64], dy: &[f64]) -> Vec<f64> {
    match epilogue {
        Some((code, alpha)) => activation_backward_from_y(code, alpha as f64, y, dy),
        None => dy.to_vec(),
    }
}

/// f(z) of a layer's own activation over its outputs, in place.
pub fn apply_activation(code: u32, alpha: f64, y: &mut [f64]) {
    y.iter_mut().for_each(|v| *v = activation(code, alpha, *v));
}

/// dy · f'(z) of a layer's own activation, f' from the activation's output y alone (the sign of z is
/// the sign of y for these functions).
pub fn activation_backward_from_y(code: u32, alpha: f64, y: &[f64], dy: &[f64]) -> Vec<f64> {
    y.iter()
        .zip(dy)
        .map(|(&y, &d)| {
            let s = match code {
                2 => 1.0 - y * y,
                3 => y * (1.0 - y),
                4 => {
                    if y > 0.0 {
                        1.0
                    } else {
                        y + alpha
                    }
                }
                5 => {
                    if y > 0.0 {
                        1.0
                    } else {
                        alpha
                    }
                }
                _ => 1.0,
            };
            d * s
        })
        .collect()
}

/// f'(x), given x and y = f(x).
pub fn activation_slope(code: u32, alpha: f64, x: f64, y: f64) -> f64 {
    match code {
        0 => (x > 0.0) as u8 as f64,
        2 => 1.0 - y * y,
        3 => y * (1.0 - y),
        4 => {
            if x > 0.0 {
                1.0
            } else {
                alpha * x.exp()
            }
        }
        5 => {
            if x > 0.0 {
                1.0
            } else {
                alpha
            }
        }
        _ => 1.0,
    }
}
