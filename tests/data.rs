//! IDX reading (raw and gzip), validation errors that name the file and the problem, dataset lookup,
//! the embedded sample, and checkpoints (round trip, Keras names, mismatches, atomic writes). No GPU.

use std::io::Write;
use std::path::Path;

use clampnet::checkpoint;
use clampnet::data::{self, Split};
use clampnet::model::init_weights;
use clampnet::model::{ModelPlan, ModelSpec};

fn idx(magic3: u8, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, magic3];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("clampnet-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A valid dataset folder of `n` 4x3 images (gzipped train files, raw test files).
fn write_dataset(dir: &Path, n: u32) {
    let imgs: Vec<u8> = (0..n * 12).map(|i| (i * 7 % 256) as u8).collect();
    let lbls: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gz(&idx(3, &[n, 4, 3], &imgs)),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte.gz"),
        gz(&idx(1, &[n], &lbls)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx(3, &[n, 4, 3], &imgs),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(1, &[n], &lbls)).unwrap();
}

fn err_of(r: clampnet::Result<impl std::fmt::Debug>) -> String {
    r.expect_err("should fail").to_string()
}

#[test]
fn reads_raw_and_gzip_idx() {
    let dir = tempdir("idx-ok");
    write_dataset(&dir, 5);
    let ds = data::load_idx_dir(&dir, 10).unwrap();
    assert_eq!(
        (
            ds.train.len(),
            ds.train.height,
            ds.train.width,
            ds.train.channels
        ),
        (5, 4, 3, 1)
    );
    assert_eq!(ds.train.images[13], (13 * 7) as u8);
    assert_eq!(ds.test.labels, vec![0, 1, 2, 3, 4]);
}

#[test]
fn bad_idx_files_give_errors_that_name_the_file_and_the_problem() {
    let p = Path::new("x-idx3-ubyte");
    assert!(err_of(data::parse_idx(p, &[0x1f, 0x8b, 8, 3], 3))
        .contains("not an IDX file: magic number 1f8b0803"));
    assert!(err_of(data::parse_idx(p, &idx(1, &[3], &[0, 1, 2]), 3))
        .contains("1 dimensions, expected 3"));
    assert!(err_of(data::parse_idx(p, &[0, 0, 0x0d, 3, 0, 0], 3)).contains("element type 0x0d"));
    assert!(
        err_of(data::parse_idx(p, &idx(3, &[2, 2, 2], &[1, 2, 3]), 3))
            .contains("truncated: dimensions [2, 2, 2] need 8 bytes of data, the file has 3")
    );
    assert!(err_of(data::parse_idx(p, &idx(3, &[1, 1, 1], &[1, 2]), 3)).contains("trailing data"));
    assert!(err_of(data::parse_idx(p, &[0, 0, 8, 3, 0, 0, 0], 3)).contains("truncated IDX header"));
    assert!(err_of(data::parse_idx(p, &[0, 0], 3)).contains("too short"));

    // whole-folder errors
    let dir = tempdir("idx-bad");
    let e = err_of(data::load_idx_dir(&dir.join("nope"), 10));
    assert!(
        e.contains("no such data folder") && e.contains("nope"),
        "{e}"
    );
    write_dataset(&dir, 5);
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let e = err_of(data::load_idx_dir(&dir, 10));
    assert!(
        e.contains("missing: expected t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"),
        "{e}"
    );
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx(1, &[4], &[0, 1, 2, 3]),
    )
    .unwrap();
    let e = err_of(data::load_idx_dir(&dir, 10));
    assert!(
        e.contains("4 labels but") && e.contains("holds 5 images"),
        "{e}"
    );
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx(1, &[5], &[0, 1, 2, 3, 12]),
    )
    .unwrap();
    let e = err_of(data::load_idx_dir(&dir, 10));
    assert!(e.contains("label 12 at index 4 is out of range"), "{e}");
    let mut corrupt = gz(&idx(1, &[5], &[0, 1, 2, 3, 4]));
    let l = corrupt.len();
    corrupt.truncate(l - 9);
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), corrupt).unwrap();
    let e = err_of(data::load_idx_dir(&dir, 10));
    assert!(
        e.contains("train-labels-idx1-ubyte.gz") && e.contains("corrupt gzip stream"),
        "{e}"
    );
}

#[test]
fn embedded_sample_is_real_fashion_mnist() {
    let ds = data::load_embedded_sample().unwrap();
    assert_eq!(
        (
            ds.train.len(),
            ds.test.len(),
            ds.train.height,
            ds.train.width
        ),
        (4000, 1000, 28, 28)
    );
    // Fashion-MNIST's first training labels: ankle boot, T-shirt, T-shirt, dress, T-shirt
    assert_eq!(&ds.train.labels[..5], &[9, 0, 0, 3, 0]);
    let mut counts = [0; 10];
    ds.train
        .labels
        .iter()
        .for_each(|&l| counts[l as usize] += 1);
    assert!(
        counts.iter().all(|&c| c > 300),
        "all classes present: {counts:?}"
    );
    // the sample is the head of the Debian files when they are installed
    if Path::new(data::DEBIAN_DIR).is_dir() {
        let full = data::load_idx_dir(Path::new(data::DEBIAN_DIR), 10).unwrap();
        assert_eq!(&full.train.images[..4000 * 784], &ds.train.images[..]);
        assert_eq!(&full.test.labels[..1000], &ds.test.labels[..]);
    }
}

#[test]
fn make_sample_round_trips() {
    let dir = tempdir("sample");
    let s = Split {
        images: (0..6 * 4).map(|i| i as u8).collect(),
        labels: vec![1, 2, 3, 4, 5, 6],
        height: 2,
        width: 2,
        channels: 1,
    };
    data::write_idx_gz(
        &s,
        4,
        &dir.join("train-images-idx3-ubyte.gz"),
        &dir.join("train-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    data::write_idx_gz(
        &s,
        9,
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let ds = data::load_idx_dir(&dir, 10).unwrap();
    assert_eq!(ds.train.labels, vec![1, 2, 3, 4]);
    assert_eq!(ds.test.images, s.images);
}

#[test]
fn checkpoints_round_trip_in_keras_layout_and_reject_mismatches() {
    let dir = tempdir("ckpt");
    let plan = ModelPlan::new(&ModelSpec::reference()).unwrap();
    let w = init_weights(&plan, 5);
    let named: checkpoint::Weights = plan
        .params
        .iter()
        .zip(&w)
        .map(|(p, v)| (p.name.clone(), p.shape.clone(), v.clone()))
        .collect();
    let path = dir.join("w.safetensors");
    checkpoint::save(&path, &named, None).unwrap();
    let (back, _) = checkpoint::load(&path).unwrap();
    let names: Vec<(&str, &[usize])> = back
        .iter()
        .map(|(n, s, _)| (n.as_str(), s.as_slice()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("conv2d.bias", &[32][..]),
            ("conv2d.kernel", &[3, 3, 1, 32][..]),
            ("dense.bias", &[10][..]),
            ("dense.kernel", &[5408, 10][..])
        ]
    );
    assert_eq!(checkpoint::match_model(&path, &back, &plan).unwrap(), w);
    // no temporary file is left beside it
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    // wrong shape, missing and extra tensors are all named
    let mut bad = named.clone();
    bad[0].1 = vec![3, 3, 1, 16];
    bad[0].2.truncate(144);
    bad.pop();
    bad.push(("dense_1.kernel".into(), vec![2], vec![0.0, 0.0]));
    let e = checkpoint::match_model(&path, &bad, &plan)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor conv2d.kernel has shape [3, 3, 1, 16], the model needs [3, 3, 1, 32]"),
        "{e}"
    );
    assert!(e.contains("missing tensor dense.bias"), "{e}");
    assert!(e.contains("unexpected tensor dense_1.kernel"), "{e}");

    // truncated body, garbage, wrong dtype
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(dir.join("t.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    let e = err_of(checkpoint::load(&dir.join("t.safetensors")));
    assert!(
        e.contains("t.safetensors") && e.contains("not a readable safetensors file"),
        "{e}"
    );
    std::fs::write(dir.join("g.safetensors"), b"hello").unwrap();
    assert!(err_of(checkpoint::load(&dir.join("g.safetensors")))
        .contains("not a readable safetensors file"));
    let f16 =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2], &[0u8; 4]).unwrap();
    std::fs::write(
        dir.join("h.safetensors"),
        safetensors::serialize(vec![("conv2d.bias", f16)], None).unwrap(),
    )
    .unwrap();
    assert!(
        err_of(checkpoint::load(&dir.join("h.safetensors"))).contains("dtype F16, expected F32")
    );
    // a failed write leaves the existing file intact
    let e = err_of(checkpoint::save(
        &dir.join("no-such-dir/x.safetensors"),
        &named,
        None,
    ));
    assert!(e.contains("no-such-dir"), "{e}");
}

/// Images with channels: rank-4 IDX files (count × rows × columns × channels), named idx4 or idx3.
#[test]
fn rank_4_idx_files_carry_channels() {
    let dir = tempdir("idx4");
    let (n, h, w, c) = (5u32, 4u32, 3u32, 3u32);
    let imgs: Vec<u8> = (0..n * h * w * c).map(|i| (i * 11 % 256) as u8).collect();
    let lbls: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    std::fs::write(
        dir.join("train-images-idx4-ubyte"),
        idx(4, &[n, h, w, c], &imgs),
    )
    .unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(1, &[n], &lbls)).unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte.gz"),
        gz(&idx(4, &[n, h, w, c], &imgs)),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(1, &[n], &lbls)).unwrap();
    let ds = data::load_idx_dir(&dir, 10).unwrap();
    assert_eq!(
        (ds.train.height, ds.train.width, ds.train.channels),
        (4, 3, 3)
    );
    assert_eq!(ds.train.images, imgs);
    // train and test must agree on the channels
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte.gz"),
        gz(&idx(3, &[n, h, w], &imgs[..(n * h * w) as usize])),
    )
    .unwrap();
    let e = err_of(data::load_idx_dir(&dir, 10));
    assert!(e.contains("4x3x3") && e.contains("4x3x1"), "{e}");
    // rank 5 is refused
    let p = Path::new("x-idx5-ubyte");
    assert!(
        err_of(data::parse_idx(p, &idx(5, &[1, 1, 1, 1, 1], &[0]), 3)).contains("expected 3 or 4")
    );
}

/// Files dropped into the page: an image folder given as (relative path, bytes) loads exactly as the same
/// folder on disk (files outside the class folders ignored, as there); the four IDX files given by name
/// load as `load_idx_dir` loads them, and one that is missing is named.
#[test]
fn dropped_files_load_as_the_same_folder_on_disk() {
    let dir = tempdir("dropped");
    let mut files = Vec::new();
    for (split, classes) in [("train", ["b", "a"]), ("test", ["a", "b"])] {
        for (c, class) in classes.iter().enumerate() {
            let d = dir.join("set").join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..3u8 {
                let img = image::GrayImage::from_fn(9, 7, |x, y| {
                    image::Luma([(x as u8 * 20 + y as u8 * 3 + i * 7 + c as u8 * 50) % 251])
                });
                let path = d.join(format!("{i}.png"));
                img.save(&path).unwrap();
                let name = format!("set/{split}/{class}/{i}.png");
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.reverse(); // the page's order is whatever the browser gives
    let on_disk = data::load_image_folders(&dir.join("set"), [8, 8, 1]).unwrap();
    let dropped = data::load_image_files(&files, [8, 8, 1]).unwrap();
    assert_eq!(dropped.class_names, on_disk.class_names);
    assert_eq!(
        dropped.class_names,
        Some(vec!["a".to_string(), "b".to_string()])
    );
    for (a, b) in [
        (&dropped.train, &on_disk.train),
        (&dropped.test, &on_disk.test),
    ] {
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.images, b.images);
        assert_eq!((a.height, a.width, a.channels), (8, 8, 1));
    }
    // as on disk, a file outside the class folders is no part of it; no class folder at all is an error
    files.push(("set/README.md".into(), b"notes".to_vec()));
    files.push(("set/train/.DS_Store".into(), vec![0]));
    let again = data::load_image_files(&files, [8, 8, 1]).unwrap();
    assert_eq!(again.train.labels, on_disk.train.labels);
    let e = data::load_image_files(&[("set/notes.txt".into(), vec![1])], [8, 8, 1]).unwrap_err();
    assert!(e.to_string().contains("found 0 class folder(s)"), "{e}");

    // the four IDX files, by name (one gzip'd, one not), as the folder loader reads them
    let sample = data::load_embedded_sample().unwrap();
    let idx = dir.join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    for (split, prefix) in [(&sample.train, "train"), (&sample.test, "t10k")] {
        data::write_idx_gz(
            split,
            50,
            &idx.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &idx.join(format!("{prefix}-labels-idx1-ubyte.gz")),
        )
        .unwrap();
    }
    let from_dir = data::load_idx_dir(&idx, 10).unwrap();
    let mut given: Vec<(String, Vec<u8>)> = std::fs::read_dir(&idx)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = format!("dropped/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    let given_ds = data::load_idx_files(&given, 10).unwrap();
    assert_eq!(given_ds.train.images, from_dir.train.images);
    assert_eq!(given_ds.test.labels, from_dir.test.labels);
    given.retain(|(n, _)| !n.contains("t10k-labels"));
    let e = data::load_idx_files(&given, 10).unwrap_err().to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte: not among the files given"),
        "{e}"
    );
}
