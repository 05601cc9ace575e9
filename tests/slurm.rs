//! A sweep on a real single-node Slurm cluster (tests/slurm.sh): an `sbatch --wait` array whose
//! merged report equals a local sweep's, and a resubmission of the tasks the report names that
//! retrains exactly the deleted trials. Skipped, with the reason, only where Slurm cannot be
//! installed or run; once per suite (not again on the GL backend: it tests the sharding, not a backend).

use std::process::Command;

#[test]
fn a_slurm_array_sweep_equals_a_local_one_and_resubmits_what_is_missing() {
    if std::env::var("WGPU_BACKEND").is_ok_and(|b| b.eq_ignore_ascii_case("gl")) {
        eprintln!("skipped on the GL backend: the Slurm test runs once, on the default adapter");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let work = std::env::temp_dir().join(format!("clampnet-slurm-{}", std::process::id()));
    let o = Command::new("bash")
        .arg(format!("{root}/tests/slurm.sh"))
        .arg(env!("CARGO_BIN_EXE_clampnet"))
        .arg(&work)
        .current_dir(root)
        .output()
        .expect("bash runs");
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() == Some(77) {
        eprintln!("{err}");
        eprintln!("skipped: Slurm could not be installed or started here (see above)");
        return;
    }
    assert!(o.status.success(), "tests/slurm.sh failed:\n{err}");
    assert!(err.contains("PASS: resubmitted --array=0-1"), "{err}");
    let _ = std::fs::remove_dir_all(&work);
}
