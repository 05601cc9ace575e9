//! The CPU twin on its own: its gradients against central finite differences in f64, on small models
//! of odd sizes that use every layer kind (valid and same padding, stacked convs, RGB input, pooling with
//! leftover rows, relu and linear, dense relu, softmax). No GPU.

mod common;

use clampnet::model::{ModelPlan, Padding};
use clampnet::reference as r;
use common::{odd_models, TestRng};

#[test]
fn twin_gradients_match_finite_differences() {
    let mut rng = TestRng::new(11);
    // and a model with every layer kind added since: activations inside conv and dense layers and as
    // layers (a softmax layer ending it), dropout (inference)
    let mut specs = odd_models();
    {
        use clampnet::layers::activation::{ActivationLayer, Func};
        use clampnet::layers::{Conv2d, Dense, Dropout, Flatten, MaxPool2d};
        use clampnet::model::{Activation::*, ModelSpec, Padding};
        let mut leaky = ActivationLayer::new(Func::LeakyRelu);
        leaky.alpha = Some(0.3);
        specs.push(ModelSpec::new(
            [7, 6, 1],
            vec![
                Conv2d::new(3, 3, Padding::Same, Tanh).into(),
                MaxPool2d::new(2).into(),
                Conv2d::new(4, 2, Padding::Valid, Elu).into(),
                leaky.into(),
                Flatten::new().into(),
                Dropout::new(0.5, None).unwrap().into(),
                Dense::new(6, Sigmoid).into(),
                Dense::new(5, LeakyRelu).into(),
                ActivationLayer::new(Func::Elu).into(),
                Dense::new(4, Linear).into(),
                ActivationLayer::new(Func::Softmax).into(),
            ],
        ));
    }
    for spec in specs {
        let plan = ModelPlan::new(&spec).unwrap();
        let batch = 3;
        let x: Vec<f64> = (0..batch * plan.input_len())
            .map(|_| rng.sym(1.0) as f64)
            .collect();
        let labels: Vec<u32> = (0..batch)
            .map(|_| rng.next_u32() % plan.classes as u32)
            .collect();
        let mut w: Vec<Vec<f64>> = plan
            .params
            .iter()
            .map(|p| (0..p.len).map(|_| rng.sym(0.6) as f64).collect())
            .collect();
        let (_, grads, _, _) = r::model_loss_grads(&plan, &w, &x, &labels);
        let h = 1e-6;
        for (t, p) in plan.params.iter().enumerate() {
            // every element of small tensors, a spread of the large ones
            let step = (p.len / 40).max(1);
            let mut worst = 0f64;
            for i in (0..p.len).step_by(step) {
                let orig = w[t][i];
                w[t][i] = orig + h;
                let up = r::model_loss_grads(&plan, &w, &x, &labels).0;
                w[t][i] = orig - h;
                let down = r::model_loss_grads(&plan, &w, &x, &labels).0;
                w[t][i] = orig;
                let numeric = (up - down) / (2.0 * h);
                let err = (numeric - grads[t][i]).abs();
                worst = worst.max(err);
                // relu/max-pool kinks are measure-zero for random data; 1e-6 covers f64 rounding
                assert!(
                    err <= 1e-6 + 1e-5 * numeric.abs(),
                    "{:?} {}[{i}]: analytic {} numeric {numeric}",
                    spec.input,
                    p.name,
                    grads[t][i]
                );
            }
            assert!(worst.is_finite());
        }
    }
}

#[test]
fn twin_layers_agree_with_hand_computed_values() {
    // 1 image 3x3x1, one 2x2 filter of ones, bias 0.5: each output is the sum of a 2x2 window + 0.5
    let d = r::ConvDims::new(1, 3, 3, 1, 1, 2, false);
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    assert_eq!(
        r::conv2d_forward(&d, &x, &[1.0; 4], &[0.5], false),
        vec![12.5, 16.5, 24.5, 28.5]
    );
    // max-pool ties go to the first maximum in row-major order
    let p = r::PoolDims::new(1, (2, 2, 1), 2, 2, Padding::Valid).unwrap();
    let (y, a) = r::maxpool_forward(&p, &[3.0, 3.0, 1.0, 3.0]);
    assert_eq!((y, a), (vec![3.0], vec![0]));
    // TF's `same`: a 3x3 input, 2x2 windows at stride 2 pad one row below and one column right; the
    // average divides by the cells inside (4, 2, 2, 1), the max ignores the padding
    let p = r::PoolDims::new(1, (3, 3, 1), 2, 2, Padding::Same).unwrap();
    let x = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0];
    assert_eq!(r::avgpool_forward(&p, &x), vec![-3.0, -4.5, -7.5, -9.0]);
    assert_eq!(r::maxpool_forward(&p, &x).0, vec![-1.0, -3.0, -7.0, -9.0]);
    // a stride-2 3x3 'same' conv of a 4x4 input pads 0 rows above and 1 below (TF)
    let d = r::ConvDims::strided(1, (4, 4, 1), 1, 3, 2, Padding::Same);
    assert_eq!((d.out_h, d.pad_h, d.pad_w), (2, 0, 0));
    let d = r::ConvDims::strided(1, (5, 6, 1), 1, 3, 2, Padding::Same);
    assert_eq!((d.out_h, d.out_w, d.pad_h, d.pad_w), (3, 3, 1, 0));
    // softmax CE of equal logits is ln(K), dlogits (1/K - onehot)/B
    let (ce, dl, _) = r::softmax_xent(1, 4, &[2.0; 4], &[1]);
    assert!((ce[0] - 4f64.ln()).abs() < 1e-12);
    assert!((dl[1] - (0.25 - 1.0)).abs() < 1e-12 && (dl[0] - 0.25).abs() < 1e-12);
}

#[test]
fn unit_norm_axis_semantics_follow_keras() {
    use clampnet::restrict::Constraint;
    // a (3,3,1,2) conv kernel of ones: axis 0 normalises columns of length 3 (each filter ends with
    // squared norm 3 = kw * in); axes [0,1,2] normalise whole filters to 1.
    let shape = [3usize, 3, 1, 2];
    let mut w = vec![1.0f32; 18];
    r::apply_constraint(&mut w, &shape, &Constraint::UnitNorm { axes: vec![0] });
    for o in 0..2 {
        let sq: f32 = (0..9).map(|t| w[t * 2 + o] * w[t * 2 + o]).sum();
        assert!((sq - 3.0).abs() < 1e-5, "axis 0: squared filter norm {sq}");
    }
    let mut w = vec![1.0f32; 18];
    r::apply_constraint(
        &mut w,
        &shape,
        &Constraint::UnitNorm {
            axes: vec![0, 1, 2],
        },
    );
    for o in 0..2 {
        let sq: f32 = (0..9).map(|t| w[t * 2 + o] * w[t * 2 + o]).sum();
        assert!((sq - 1.0).abs() < 1e-5, "per filter: squared norm {sq}");
    }
}
