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
    /// training images to keep
    #[arg(long, default_value_t = 4000, allow_negative_numbers = true)]
    train: i64,
    /// test images to keep
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    test: i64,
    #[arg(long, default_value = "assets/fashion-mnist-sample")]
    out: PathBuf,
}

pub fn run(m: MakeSampleArgs) -> Result<()> {
    let train = super::count("--train", Some(m.train), 0)?.unwrap_or(0);
    let test = super::count("--test", Some(m.test), 0)?.unwrap_or(0);
    let ds = data::load_idx_dir(&m.from, 10)?;
    std::fs::create_dir_all(&m.out).map_err(|e| Error::io(&m.out, e))?;
    data::write_idx_gz(
        &ds.train,
        train,
        &m.out.join("train-images-idx3-ubyte.gz"),
        &m.out.join("train-labels-idx1-ubyte.gz"),
    )?;
    data::write_idx_gz(
        &ds.test,
        test,
        &m.out.join("t10k-images-idx3-ubyte.gz"),
        &m.out.join("t10k-labels-idx1-ubyte.gz"),
    )?;
    eprintln!(
        "wrote {} train and {} test images to {}",
        train.min(ds.train.len()),
        test.min(ds.test.len()),
        m.out.display()
    );
    Ok(())
}
