//! Runs that step together: the K trials of a sweep that share an architecture, a batch size and their
//! data train as the K models of one step (`Step::new_many`, the K-model kernels of `gpu::batched`),
//! each run on its own thread doing everything else exactly as a run of its own does (its epochs,
//! callbacks, checkpoints and files: `cli::train`'s code, unchanged).
//!
//! A run joins its group when its trainer is made. The calls that put work on the GPU (building the
//! step, training a range of steps, an evaluation pass) are collective: each member makes the call,
//! and the last to arrive runs it for all, with every member's own inputs (its epoch order); every
//! member then takes its own result. Reading or writing one model's weights and optimizer state is
//! not collective. A member that stops (its run is done, or failed) leaves; the others go on, its
//! model stepping unread. Members that call different things (a callback stopped one early while the
//! others train on) get an error rather than a wait.

use std::any::Any;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::data::Split;
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::trainer::{step_setup, Core, EpochStats, Orders, PassMetrics, Setup};

type Boxed = Box<dyn Any + Send>;

/// A member's share of the build: its setup and starting weights.
type Joining = (Setup, Vec<Vec<f32>>);

/// K runs that step together (see the module's documentation).
pub struct Group {
    state: Mutex<State>,
    cv: Condvar,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Group")
    }
}

struct State {
    /// per member: not yet left
    active: Vec<bool>,
    /// the step, once built
    core: Option<Core>,
    /// per member: its model in the step
    model: Vec<Option<usize>>,
    /// the collective call under way, and each member's arguments to it
    key: Option<String>,
    args: Vec<Option<Boxed>>,
    results: Vec<Option<Boxed>>,
    /// collective calls completed
    generation: u64,
}

impl Group {
    pub fn new(members: usize) -> Arc<Group> {
        Arc::new(Group {
            state: Mutex::new(State {
                active: vec![true; members],
                core: None,
                model: vec![None; members],
                key: None,
                args: (0..members).map(|_| None).collect(),
                results: (0..members).map(|_| None).collect(),
                generation: 0,
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::Model("a run of this group panicked".into()))
    }

    /// Member `index` is done (or failed): the others no longer wait for it.
    pub fn leave(&self, index: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = st.active.get_mut(index) {
            *a = false;
            st.args[index] = None;
        }
        self.cv.notify_all();
    }

    /// A collective call `key` of member `index` with its `arg`: the last member to arrive runs `run`
    /// over every member's argument (None for those that left), which returns every member's result.
    fn collective<A: Send + 'static, R: Send + 'static>(
        &self,
        index: usize,
        key: String,
        arg: A,
        run: impl FnOnce(&mut State, Vec<Option<A>>) -> Vec<Option<R>>,
    ) -> Result<R> {
        let mut st = self.lock()?;
        if st.key.as_ref().is_some_and(|k| *k != key) {
            return Err(Error::Model(format!(
                "the runs stepping together diverged: one calls {key} while others call {}",
                st.key.as_deref().unwrap_or("")
            )));
        }
        st.key = Some(key);
        st.args[index] = Some(Box::new(arg));
        let generation = st.generation;
        let mut run = Some(run);
        loop {
            if st.generation != generation {
                break;
            }
            let ready = (0..st.active.len()).all(|i| !st.active[i] || st.args[i].is_some());
            if ready {
                let args: Vec<Option<A>> = st
                    .args
                    .iter_mut()
                    .map(|a| a.take().and_then(|b| b.downcast::<A>().ok()).map(|b| *b))
                    .collect();
                st.key = None;
                let results = (run.take().expect("runs once"))(&mut st, args);
                for (slot, r) in st.results.iter_mut().zip(results) {
                    *slot = r.map(|r| Box::new(r) as Boxed);
                }
                st.generation += 1;
                self.cv.notify_all();
                break;
            }
            st = self
                .cv
                .wait(st)
                .map_err(|_| Error::Model("a run of this group panicked".into()))?;
        }
        st.results[index]
            .take()
            .and_then(|r| r.downcast::<R>().ok())
            .map(|r| *r)
            .ok_or_else(|| Error::Model("no result for this run from its group".into()))
    }

    /// Join the group's step with this run's setup and starting weights: built once every member has
    /// joined (or left), from the first member's setup and every member's restrictions, optimizer
    /// settings and weights. An error (the members cannot share a step) sends each to train alone.
    pub fn join(
        &self,
        index: usize,
        ctx: &Context,
        (setup, weights): (&Setup, &[Vec<f32>]),
        (train, test): (&Split, &Split),
    ) -> Result<()> {
        let mut mine = setup.clone();
        mine.validation = None;
        let arg = (mine, weights.to_vec());
        let r = self.collective(index, "build".into(), arg, |st, args| {
            let members: Vec<(usize, &Joining)> = args
                .iter()
                .enumerate()
                .filter_map(|(i, a)| a.as_ref().map(|a| (i, a)))
                .collect();
            let built = build(ctx, setup, &members, (train, test));
            let out = match built {
                Ok(core) => {
                    for (m, (i, _)) in members.iter().enumerate() {
                        st.model[*i] = Some(m);
                    }
                    st.core = Some(core);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            };
            args.iter()
                .map(|a| a.as_ref().map(|_| out.clone()))
                .collect()
        })?;
        r.map_err(Error::Model)
    }

    /// The models its step holds: how many members trained together (1 when it was never built, its
    /// members having trained alone).
    pub fn models(&self) -> usize {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.core.as_ref().map_or(1, |c| c.models())
    }

    /// `f` of the step and member `index`'s model in it.
    pub(crate) fn with_core<R>(&self, index: usize, f: impl FnOnce(&Core, usize) -> R) -> R {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let core = st.core.as_ref().expect("a member's group has its step");
        f(core, st.model[index].expect("a member has a model"))
    }

    /// `with_core`, mutably.
    pub(crate) fn with_core_mut<R>(
        &self,
        index: usize,
        f: impl FnOnce(&mut Core, usize) -> R,
    ) -> R {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let m = st.model[index].expect("a member has a model");
        f(st.core.as_mut().expect("a member's group has its step"), m)
    }

    /// `Trainer::train_range` of every member together: member `index` with its epoch order.
    pub(crate) fn train_range(
        &self,
        index: usize,
        ctx: &Context,
        (epoch, order): (usize, Vec<u32>),
        (first, end, done): (usize, usize, u64),
        stop: &dyn Fn() -> bool,
    ) -> Result<Result<EpochStats>> {
        let key = format!("train epoch {epoch} steps {first}..{end} after {done}");
        self.collective(index, key, order, |st, orders| {
            let k = st.core.as_ref().map_or(0, |c| c.models());
            let mut by_model: Orders = vec![None; k];
            for (i, o) in orders.iter().enumerate() {
                if let (Some(m), Some(o)) = (st.model[i], o) {
                    by_model[m] = Some(o.clone());
                }
            }
            let core = st.core.as_ref().expect("built");
            match pollster::block_on(core.train_range(
                ctx,
                (epoch, &by_model),
                (first, end, done),
                stop,
                &mut |_, _| {},
            )) {
                Ok(mut per_model) => orders
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        o.as_ref().map(|_| {
                            let m = st.model[i].expect("a member has a model");
                            std::mem::replace(&mut per_model[m], Err(Error::Model("taken".into())))
                        })
                    })
                    .collect(),
                Err(e) => {
                    let msg = e.to_string();
                    orders
                        .iter()
                        .map(|o| o.as_ref().map(|_| Err(Error::Model(msg.clone()))))
                        .collect()
                }
            }
        })
    }

    /// An inference pass (`val`: the validation split) of every member together.
    pub(crate) fn pass(
        &self,
        index: usize,
        ctx: &Context,
        val: bool,
    ) -> Result<Option<PassMetrics>> {
        let key = format!("pass (validation: {val})");
        let r = self.collective(index, key, (), |st, args| {
            let core = st.core.as_ref().expect("built");
            let out = pollster::block_on(core.pass(ctx, val)).map_err(|e| e.to_string());
            args.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.as_ref().map(|_| {
                        let m = st.model[i].expect("a member has a model");
                        out.clone().map(|v| v.map(|v| v[m]))
                    })
                })
                .collect()
        })?;
        r.map_err(Error::Model)
    }
}

/// The step of `members` (index, (setup, weights)), if they can share one: the same model, batch
/// size, kernels, loss and data. `setup` is the building member's own (its validation split).
fn build(
    ctx: &Context,
    setup: &Setup,
    members: &[(usize, &Joining)],
    (train, test): (&Split, &Split),
) -> Result<Core> {
    for (_, (s, _)) in members {
        let same = s.model.spec == setup.model.spec
            && s.batch_size == setup.batch_size
            && s.fuse == setup.fuse
            && s.fuse_loss == setup.fuse_loss
            && s.kernel_set == setup.kernel_set
            && s.loss == setup.loss
            && s.class_weight == setup.class_weight;
        if !same {
            return Err(Error::Config(
                "the runs differ in more than restrictions, learning rate and seed".into(),
            ));
        }
    }
    let parts: Vec<crate::step::Part> = members
        .iter()
        .map(|(_, (s, w))| crate::step::Part {
            restrictions: &s.restrictions,
            optimizer: &s.optimizer,
            weights: w,
            seed: s.seed,
        })
        .collect();
    let set = setup.kernel_set.unwrap_or(ctx.kernel_set);
    let step = crate::step::Step::new_many(ctx, step_setup(setup, set), &parts, train, test)?;
    Ok(Core::new(ctx, step))
}
