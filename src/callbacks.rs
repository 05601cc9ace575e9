//! Keras' `fit()` callbacks clampnet runs between epochs, as state machines over the epoch's logs
//! (`loss`, `accuracy`, `val_loss`, `val_accuracy`): `EarlyStopping` and `ReduceLROnPlateau`, with
//! Keras 3's defaults and its exact order of checks (`keras/src/callbacks/`). Their state is plain
//! data, saved with a checkpoint so that a resumed run continues it.

use serde::{Deserialize, Serialize};

/// Which way a monitored value improves; `auto`: from its name (`*loss` down, `*accuracy` up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Auto,
    Min,
    Max,
}

/// Keras' `MonitorCallback`: the monitored log and its improvement test.
#[derive(Clone, Debug, PartialEq)]
pub struct Monitor {
    pub name: String,
    /// improvement is `current - min_delta < best` (less) or `current - min_delta > best`, with
    /// `min_delta` negated for less, as Keras does
    less: bool,
    min_delta: f64,
}

impl Monitor {
    pub fn new(name: &str, mode: Direction, min_delta: f64) -> Result<Self, String> {
        let base = name.strip_prefix("val_").unwrap_or(name);
        let less = match (mode, base) {
            (Direction::Min, _) => true,
            (Direction::Max, _) => false,
            (Direction::Auto, "loss") => true,
            (Direction::Auto, "accuracy") => false,
            (Direction::Auto, _) => {
                return Err(format!(
                    "monitor = \"{name}\": clampnet logs loss, accuracy, val_loss and val_accuracy; for another name set mode = \"min\" or \"max\""
                ))
            }
        };
        Ok(Monitor {
            name: name.to_string(),
            less,
            min_delta: if less {
                -min_delta.abs()
            } else {
                min_delta.abs()
            },
        })
    }

    /// Keras' `_is_improvement(current, reference)`: `current - min_delta` in double (Python), then
    /// compared as float32 tensors (`ops.less` / `ops.greater`).
    pub fn improves(&self, current: f64, reference: Option<f64>) -> bool {
        let shifted = (current - self.min_delta) as f32;
        match reference {
            None => true,
            Some(r) if self.less => shifted < r as f32,
            Some(r) => shifted > r as f32,
        }
    }
}

/// Keras' `EarlyStopping`.
#[derive(Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    pub monitor: Monitor,
    pub patience: usize,
    pub baseline: Option<f64>,
    pub restore_best_weights: bool,
    pub start_from_epoch: usize,
    pub state: EarlyStoppingState,
}

/// What `EarlyStopping` carries from epoch to epoch.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct EarlyStoppingState {
    pub wait: usize,
    pub best: Option<f64>,
    /// 0-based
    pub best_epoch: usize,
    /// the 0-based epoch that stopped training (0: none)
    pub stopped_epoch: usize,
}

/// What `EarlyStopping::on_epoch_end` asks of the trainer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopDecision {
    /// keep a copy of this epoch's weights (restore_best_weights)
    pub save_weights: bool,
    pub stop: bool,
}

impl EarlyStopping {
    /// After 0-based `epoch`, whose monitored value is `current` (None: not logged, which Keras skips
    /// with a warning).
    pub fn on_epoch_end(
        &mut self,
        epoch: usize,
        current: Option<f64>,
        have_best: bool,
    ) -> StopDecision {
        let mut d = StopDecision::default();
        let Some(current) = current else {
            return d;
        };
        if epoch < self.start_from_epoch {
            return d;
        }
        let s = &mut self.state;
        if self.restore_best_weights && !have_best {
            d.save_weights = true;
            s.best_epoch = epoch;
        }
        s.wait += 1;
        if self.monitor.improves(current, s.best) {
            s.best = Some(current);
            s.best_epoch = epoch;
            d.save_weights = self.restore_best_weights;
            if self
                .baseline
                .is_none_or(|b| self.monitor.improves(current, Some(b)))
            {
                s.wait = 0;
            }
            return d;
        }
        if s.wait >= self.patience && epoch > 0 {
            s.stopped_epoch = epoch;
            d.stop = true;
        }
        d
    }
}

/// Keras' `ReduceLROnPlateau`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReduceLrOnPlateau {
    pub monitor: Monitor,
    pub factor: f64,
    pub patience: usize,
    pub cooldown: usize,
    pub min_lr: f64,
    pub state: ReduceLrState,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ReduceLrState {
    pub wait: usize,
    pub best: Option<f64>,
    pub cooldown_counter: usize,
}

impl ReduceLrOnPlateau {
    /// After 0-based `epoch` with the monitored value `current` and the learning rate `lr`: the new
    /// learning rate when it is reduced (float32, as Keras' variable holds it).
    pub fn on_epoch_end(&mut self, _epoch: usize, current: Option<f64>, lr: f32) -> Option<f32> {
        let current = current?;
        let s = &mut self.state;
        if s.cooldown_counter > 0 {
            s.cooldown_counter -= 1;
            s.wait = 0;
        }
        if self.monitor.improves(current, s.best) {
            s.best = Some(current);
            s.wait = 0;
            return None;
        }
        if s.cooldown_counter > 0 {
            return None;
        }
        s.wait += 1;
        if s.wait < self.patience {
            return None;
        }
        let old = lr as f64;
        if old > self.min_lr as f32 as f64 {
            let new = (old * self.factor).max(self.min_lr) as f32;
            s.cooldown_counter = self.cooldown;
            s.wait = 0;
            return Some(new);
        }
        None
    }
}

/// The callbacks' state a checkpoint keeps (JSON in its metadata).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CallbackState {
    #[serde(default)]
    pub early_stopping: Option<EarlyStoppingState>,
    #[serde(default)]
    pub reduce_lr: Option<ReduceLrState>,
}
