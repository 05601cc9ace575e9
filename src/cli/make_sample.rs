//! `clampnet make-sample`: cut the embedded sample (gzip IDX) from a full Fashion-MNIST folder; that is
//! how assets/fashion-mnist-sample/ was made.

use std::path::PathBuf;

use clap::Args;

use clampnet::data;
use clampnet::{Error, Result};

#[derive(Args)]
pub struct MakeSampleArgs {
    /// folder with the four IDX files
    #[arg(long, default_value = data::DEBIAN_DIR)]
    from: PathBuf,
    #[arg(long, default_value_t = 4000)]
    train: usize,
    #[arg(long, default_value_t = 1000)]
    test: usize,
    #[arg(long, default_value = "assets/fashion-mnist-sample")]
    out: PathBuf,
}

pub fn run(m: MakeSampleArgs) -> Result<()> {
    let ds = data::load_idx_dir(&m.from, 10)?;
    std::fs::create_dir_all(&m.out).map_err(|e| Error::io(&m.out, e))?;
    data::write_idx_gz(
        &ds.train,
        m.train,
        &m.out.join("train-images-idx3-ubyte.gz"),
        &m.out.join("train-labels-idx1-ubyte.gz"),
    )?;
    data::write_idx_gz(
        &ds.test,
        m.test,
        &m.out.join("t10k-images-idx3-ubyte.gz"),
        &m.out.join("t10k-labels-idx1-ubyte.gz"),
    )?;
    eprintln!(
        "wrote {} train and {} test images to {}",
        m.train.min(ds.train.len()),
        m.test.min(ds.test.len()),
        m.out.display()
    );
    Ok(())
}
