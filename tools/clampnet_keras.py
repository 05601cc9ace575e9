"""Keras side of clampnet's file format: the one restriction Keras has no class for.

clampnet reads and writes clip_by_value as the serializable Keras class `clampnet>ClipByValue`. Import
this module before `keras.saving.load_model` opens a .keras file that uses it (one clampnet wrote from a
model with a `clip` constraint), or use `ClipByValue` in your own model so clampnet trains it:

    import clampnet_keras                      # tools/clampnet_keras.py, on sys.path
    keras.layers.Conv2D(32, 3, kernel_constraint=clampnet_keras.ClipByValue(-1.0, 1.0))
"""
import keras


@keras.saving.register_keras_serializable(package="clampnet")
class ClipByValue(keras.constraints.Constraint):
    """w <- clip(w, min_value, max_value) after every optimizer step."""

    def __init__(self, min_value, max_value):
        self.min_value = float(min_value)
        self.max_value = float(max_value)

    def __call__(self, w):
        return keras.ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}
