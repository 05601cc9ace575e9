//! Inputs that once crashed a fuzz target (scripts/fuzz.sh copies them to tests/fuzz-regressions/<target>/),
//! plus hand-made hostile ones, replayed through the same entry points: each must give Ok or a clear
//! error, never a panic. No GPU.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "{target}: no inputs");
    v
}

#[test]
fn idx_inputs_are_refused_cleanly() {
    for f in inputs("idx") {
        let bytes = std::fs::read(&f).unwrap();
        for rank in [1, 3] {
            let r = clampnet::data::decode_idx(&f, &bytes, rank);
            assert!(r.is_err(), "{f:?} rank {rank} should be refused");
            assert!(
                r.unwrap_err()
                    .to_string()
                    .contains(f.file_name().unwrap().to_str().unwrap()),
                "{f:?}: error names the file"
            );
        }
    }
}

#[test]
fn checkpoint_inputs_are_refused_cleanly() {
    let plan = clampnet::model::ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
    for f in inputs("checkpoint") {
        let bytes = std::fs::read(&f).unwrap();
        match clampnet::checkpoint::parse(&f, &bytes) {
            Err(e) => assert!(e.to_string().contains("checkpoint"), "{f:?}: {e}"),
            Ok((w, _)) => assert!(
                clampnet::checkpoint::match_model(&f, &w, &plan).is_err(),
                "{f:?}"
            ),
        }
    }
}

#[test]
fn config_inputs_are_refused_cleanly() {
    for f in inputs("config") {
        let text = std::fs::read_to_string(&f).unwrap();
        let r = clampnet::config::Config::parse(&text)
            .and_then(|c| clampnet::model::ModelPlan::new(&c.model).map_err(|e| e.to_string()));
        assert!(r.is_err(), "{f:?} should be refused");
    }
}

#[test]
fn keras_inputs_are_refused_cleanly() {
    for f in inputs("keras") {
        let bytes = std::fs::read(&f).unwrap();
        let a = clampnet::keras::archive::read(&bytes);
        assert!(a.is_err(), "{f:?} should be refused");
    }
    // through the CLI's loader too: the error names the file
    for f in inputs("keras") {
        let e = clampnet::files::load_config(&f).err().unwrap().to_string();
        assert!(
            e.contains(f.file_name().unwrap().to_str().unwrap()),
            "{f:?}: {e}"
        );
    }
}

#[test]
fn keras_h5_inputs_are_refused_cleanly() {
    let plan = clampnet::model::ModelPlan::new(&clampnet::model::ModelSpec::reference()).unwrap();
    for f in inputs("keras_h5") {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            clampnet::keras::h5::read_weights(bytes.clone(), &plan).is_err(),
            "{f:?}"
        );
        let layout = clampnet::keras::h5::OptimizerLayout::of(&Default::default());
        let _ = clampnet::keras::h5::read_optimizer(bytes, &plan, layout);
    }
}

#[test]
fn keras_json_inputs_are_refused_cleanly() {
    for f in inputs("keras_json") {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(clampnet::keras::parse_model(&text).is_err(), "{f:?}");
    }
}
