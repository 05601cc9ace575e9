//! The loss as Keras configures one (plain data; the GPU step and the CPU twin read it): sparse or
//! one-hot categorical cross-entropy, on the softmax's probabilities or on logits, with label smoothing.
//!
//! Both kinds take clampnet's integer labels (IDX files, image folders): `categorical_crossentropy`
//! one-hot encodes them as `keras.utils.to_categorical` would. The GPU computes the loss from the last
//! layer's logits in every case, as Keras' TensorFlow backend does for a softmax output (it reads the
//! logits behind it); `from_logits` only says which activation the last layer has.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LossKind {
    /// `sparse_categorical_crossentropy`
    #[default]
    Sparse,
    /// `categorical_crossentropy` (integer labels one-hot encoded)
    Categorical,
}

#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct LossSpec {
    pub kind: LossKind,
    /// the last layer outputs logits (a linear dense layer), not probabilities (softmax)
    pub from_logits: bool,
    /// categorical only: targets `onehot · (1 − s) + s / classes`
    pub label_smoothing: f32,
}

impl LossSpec {
    /// Keras' name.
    pub fn keras_name(&self) -> &'static str {
        match self.kind {
            LossKind::Sparse => "sparse_categorical_crossentropy",
            LossKind::Categorical => "categorical_crossentropy",
        }
    }

    /// Keras' class name.
    pub fn keras_class(&self) -> &'static str {
        match self.kind {
            LossKind::Sparse => "SparseCategoricalCrossentropy",
            LossKind::Categorical => "CategoricalCrossentropy",
        }
    }

    /// An error naming the setting that does not fit; `last_is_softmax`: the model's last layer.
    pub fn validate(&self, last_is_softmax: bool) -> Result<()> {
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return Err(Error::Config(format!(
                "label_smoothing must be in [0, 1], got {}",
                self.label_smoothing
            )));
        }
        if self.label_smoothing != 0.0 && self.kind == LossKind::Sparse {
            return Err(Error::Config(
                "label_smoothing is a setting of categorical_crossentropy, not of sparse_categorical_crossentropy (as in Keras)".into(),
            ));
        }
        match (self.from_logits, last_is_softmax) {
            (true, true) => Err(Error::Config(format!(
                "{} has from_logits = true but the last layer applies softmax: Keras would apply softmax twice. Make the last dense layer's activation linear, or set from_logits = false",
                self.keras_name()
            ))),
            (false, false) => Err(Error::Config(format!(
                "the last dense layer is linear (logits) but {} has from_logits = false: set from_logits = true, or the activation softmax",
                self.keras_name()
            ))),
            _ => Ok(()),
        }
    }
}
