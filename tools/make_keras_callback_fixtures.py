#!/usr/bin/env python3
"""Keras' own EarlyStopping and ReduceLROnPlateau driven over fixed sequences of epoch logs, to pin
clampnet's state machines (src/callbacks.rs) to them: tests/fixtures/keras_callbacks.json.

    .venv-tf/bin/python tools/make_keras_callback_fixtures.py

Each case gives the callback's arguments and the monitored values per epoch; Keras' decisions after
each epoch are recorded: whether training stops, the learning rate after the epoch, the best epoch.
"""
import json
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

SEQS = {
    "down_then_up": [1.0, 0.8, 0.79995, 0.81, 0.7, 0.72, 0.73, 0.74, 0.69, 0.9, 0.95, 0.96],
    "noisy_accuracy": [0.5, 0.6, 0.6, 0.58, 0.61, 0.61, 0.605, 0.7, 0.69, 0.68, 0.67, 0.71],
    "plateau": [0.5] * 12,
    "steady": [1.0 / (i + 1) for i in range(12)],
}

CASES = [
    ("early_stopping", {"monitor": "val_loss", "patience": 0}, "down_then_up"),
    ("early_stopping", {"monitor": "val_loss", "patience": 2, "min_delta": 0.001}, "down_then_up"),
    ("early_stopping", {"monitor": "val_loss", "patience": 3, "restore_best_weights": True}, "down_then_up"),
    ("early_stopping", {"monitor": "val_loss", "patience": 2, "baseline": 0.75}, "down_then_up"),
    ("early_stopping", {"monitor": "val_loss", "patience": 1, "start_from_epoch": 3}, "down_then_up"),
    ("early_stopping", {"monitor": "val_accuracy", "patience": 2}, "noisy_accuracy"),
    ("early_stopping", {"monitor": "val_accuracy", "patience": 1, "mode": "min"}, "noisy_accuracy"),
    ("early_stopping", {"monitor": "val_loss", "patience": 4}, "plateau"),
    ("reduce_lr_on_plateau", {"monitor": "val_loss", "patience": 2, "factor": 0.5}, "down_then_up"),
    ("reduce_lr_on_plateau", {"monitor": "val_loss", "patience": 1, "factor": 0.2, "cooldown": 2, "min_lr": 1e-4},
     "plateau"),
    ("reduce_lr_on_plateau", {"monitor": "val_accuracy", "patience": 1, "factor": 0.5, "min_delta": 0.02},
     "noisy_accuracy"),
    ("reduce_lr_on_plateau", {"monitor": "val_loss", "patience": 1, "factor": 0.1}, "steady"),
    ("reduce_lr_on_plateau", {"monitor": "val_loss"}, "plateau"),
]


def main():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    out = {"keras": keras.__version__, "cases": []}
    for kind, args, seq in CASES:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.evaluate(np.zeros((1, 2), np.float32), np.zeros(1), verbose=0)   # builds the metrics
        cls = keras.callbacks.EarlyStopping if kind == "early_stopping" else keras.callbacks.ReduceLROnPlateau
        cb = cls(**args)
        cb.set_model(model)
        cb.on_train_begin()
        steps = []
        for epoch, value in enumerate(SEQS[seq]):
            model.stop_training = False
            cb.on_epoch_end(epoch, {args["monitor"]: value})
            lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
            step = {"stop": bool(model.stop_training), "learning_rate": lr}
            if kind == "early_stopping":
                step["best_epoch"] = int(cb.best_epoch) if cb.best is not None else None
            steps.append(step)
            if model.stop_training:
                break
        out["cases"].append({"kind": kind, "args": args, "values": SEQS[seq][:len(steps)], "steps": steps})
    path = "tests/fixtures/keras_callbacks.json"
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path, len(out["cases"]), "cases")


if __name__ == "__main__":
    main()
