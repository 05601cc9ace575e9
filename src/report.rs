//! What the weights look like: the restriction report printed after training (and in `--json`), and
//! `clampnet inspect`. Filter norms are over all axes but the last (one per output unit / filter).

use serde::Serialize;

use crate::restrict::{Constraint, Regularizer, Restrictions, TensorRestriction};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TensorStats {
    pub name: String,
    pub shape: Vec<usize>,
    pub max_abs: f64,
    pub zero_fraction: f64,
    /// kernels only (rank >= 2): L2 norms over all axes but the last
    pub filter_norm_min: Option<f64>,
    pub filter_norm_max: Option<f64>,
    /// restricted tensors only: what is applied, in Keras words
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restriction: Option<String>,
    /// regularized tensors only: l1 * sum|w| + l2 * sum w^2
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regularization_loss: Option<f64>,
}

pub fn tensor_stats(name: &str, shape: &[usize], w: &[f32]) -> TensorStats {
    let max_abs = w.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let zeros = w.iter().filter(|&&v| v == 0.0).count();
    let (mut lo, mut hi) = (None::<f64>, None::<f64>);
    if shape.len() >= 2 {
        let out = *shape.last().unwrap();
        let mut sq = vec![0f64; out];
        for (i, &v) in w.iter().enumerate() {
            sq[i % out] += v as f64 * v as f64;
        }
        for s in sq {
            let n = s.sqrt();
            lo = Some(lo.map_or(n, |l| l.min(n)));
            hi = Some(hi.map_or(n, |h| h.max(n)));
        }
    }
    TensorStats {
        name: name.to_string(),
        shape: shape.to_vec(),
        max_abs,
        zero_fraction: if w.is_empty() {
            0.0
        } else {
            zeros as f64 / w.len() as f64
        },
        filter_norm_min: lo,
        filter_norm_max: hi,
        restriction: None,
        regularization_loss: None,
    }
}

fn describe_regularizer(r: &Regularizer) -> String {
    let mut parts = Vec::new();
    if r.l1 != 0.0 {
        parts.push(format!(
            "l1({}{})",
            r.l1,
            if r.proximal { ", proximal" } else { "" }
        ));
    }
    if r.l2 != 0.0 {
        parts.push(format!("l2({})", r.l2));
    }
    parts.join(" + ")
}

pub fn describe_constraint(c: &Constraint) -> String {
    match c {
        Constraint::ClipByValue { lo, hi } => format!("clip({lo}, {hi})"),
        Constraint::UnitNorm { axes } => format!("unit_norm(axis={axes:?})"),
        Constraint::MaxNorm { max_value, axes } => format!("max_norm({max_value}, axis={axes:?})"),
        Constraint::MinMaxNorm {
            min_value,
            max_value,
            rate,
            axes,
        } => {
            format!("min_max_norm({min_value}, {max_value}, rate={rate}, axis={axes:?})")
        }
        Constraint::NonNeg => "non_neg".into(),
    }
}

pub fn describe(t: &TensorRestriction) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &t.regularizer {
        parts.push(describe_regularizer(r));
    }
    parts.extend(t.constraints.iter().map(describe_constraint));
    parts.extend(
        t.epoch_constraints
            .iter()
            .map(|c| format!("{} after each epoch", describe_constraint(c))),
    );
    parts.retain(|p| !p.is_empty());
    parts.join(", ")
}

/// Stats of every restricted tensor of `weights` (name, Keras shape, values).
pub fn restriction_report(
    weights: &[(String, Vec<usize>, Vec<f32>)],
    r: &Restrictions,
) -> Vec<TensorStats> {
    let mut out = Vec::new();
    for (name, shape, w) in weights {
        let Some(t) = r.get(name) else { continue };
        if t.regularizer.is_none() && t.constraints.is_empty() && t.epoch_constraints.is_empty() {
            continue;
        }
        let mut s = tensor_stats(name, shape, w);
        s.restriction = Some(describe(t));
        s.regularization_loss = t.regularizer.map(|g| {
            w.iter()
                .map(|&v| g.l1 as f64 * (v as f64).abs() + g.l2 as f64 * (v as f64) * (v as f64))
                .sum()
        });
        out.push(s);
    }
    out
}

/// A fixed-width table of stats, for the terminal.
pub fn table(stats: &[TensorStats]) -> String {
    let mut s = format!(
        "{:<16} {:<16} {:>9} {:>7} {:>10} {:>10} {:>9}  {}\n",
        "tensor", "shape", "max|w|", "zeros", "norm min", "norm max", "reg loss", "restriction"
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for t in stats {
        s += &format!(
            "{:<16} {:<16} {:>9.4} {:>6.1}% {:>10} {:>10} {:>9}  {}\n",
            t.name,
            format!("{:?}", t.shape),
            t.max_abs,
            100.0 * t.zero_fraction,
            f(t.filter_norm_min),
            f(t.filter_norm_max),
            f(t.regularization_loss),
            t.restriction.as_deref().unwrap_or("")
        );
    }
    s
}
