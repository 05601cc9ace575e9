//! Datasets: the IDX format (raw or gzip) that MNIST and Fashion-MNIST ship in, validated on read, and
//! the lookup order `--data DIR`, `$CLAMPNET_DATA`, `/usr/share/datasets/fashion-mnist`, then the sample
//! embedded in the binary (cut from the Debian files by `clampnet make-sample`).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST class names, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const SAMPLE_FILES: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../assets/fashion-mnist-sample/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../assets/fashion-mnist-sample/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../assets/fashion-mnist-sample/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../assets/fashion-mnist-sample/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// Images as u8 (N, H, W, C) row-major, labels as class indices.
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn per_image(&self) -> usize {
        self.height * self.width * self.channels
    }
    /// Keras' `validation_split`: the last `fraction` of the split (split at floor(n · (1 − fraction)),
    /// before any shuffling), returned as the validation split.
    pub fn hold_out(&mut self, fraction: f64) -> Result<Split> {
        let n = self.len();
        let at = (n as f64 * (1.0 - fraction)).floor() as usize;
        if at == 0 || at == n {
            return Err(Error::Config(format!(
                "validation_split {fraction} of {n} training examples leaves {} for training and {} for validation: both need at least one",
                at,
                n - at
            )));
        }
        let per = self.height * self.width * self.channels;
        let val = Split {
            images: self.images[at * per..n * per].to_vec(),
            labels: self.labels[at..].to_vec(),
            height: self.height,
            width: self.width,
            channels: self.channels,
        };
        self.truncate(at);
        Ok(val)
    }

    /// The first `n` examples (all of them if `n` is larger).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.images.truncate(n * self.per_image());
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Split,
    pub test: Split,
    pub classes: usize,
    /// class names from an image-folder dataset (the folder names), None for IDX files
    pub class_names: Option<Vec<String>>,
    /// where it came from, for the log
    pub source: String,
}

/// Decompress when the bytes start with the gzip magic.
fn maybe_gunzip(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Data {
                path: path.into(),
                msg: format!("corrupt gzip stream ({e}); re-download or re-install the file"),
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parse an IDX file of unsigned bytes: returns (dims, payload). `want_rank` is 3 for images (a rank-4
/// file, count × rows × columns × channels, is taken too), 1 for labels.
pub fn parse_idx(path: &Path, bytes: &[u8], want_rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let err = |msg: String| Error::Data {
        path: path.into(),
        msg,
    };
    if bytes.len() < 4 {
        return Err(err(format!(
            "too short for an IDX header ({} bytes)",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(format!(
            "not an IDX file: magic number {:02x}{:02x}{:02x}{:02x}, expected 0000080{want_rank} (is it a gzip file renamed, or another format?)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(err(format!(
            "IDX element type 0x{:02x} is not supported: expected 0x08 (unsigned byte)",
            bytes[2]
        )));
    }
    let rank = bytes[3] as usize;
    if rank != want_rank && !(want_rank == 3 && rank == 4) {
        return Err(err(format!(
            "IDX file has {rank} dimensions, expected {}",
            if want_rank == 3 {
                "3 or 4 (images: count, rows, columns[, channels])"
            } else {
                "1 (labels: count)"
            }
        )));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(err(format!(
            "truncated IDX header: {} bytes, expected at least {header}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(format!("dimensions {dims:?} overflow")))?;
    let body = &bytes[header..];
    if body.len() < expected {
        return Err(err(format!(
            "truncated: dimensions {dims:?} need {expected} bytes of data, the file has {}",
            body.len()
        )));
    }
    if body.len() > expected {
        return Err(err(format!(
            "{} bytes of trailing data after the {expected} bytes that dimensions {dims:?} describe",
            body.len() - expected
        )));
    }
    Ok((dims, body.to_vec()))
}

/// An IDX file's bytes, raw or gzip, parsed: (dims, payload). The entry point of the IDX fuzz target.
pub fn decode_idx(path: &Path, bytes: &[u8], want_rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = maybe_gunzip(path, bytes.to_vec())?;
    parse_idx(path, &raw, want_rank)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    maybe_gunzip(path, bytes)
}

/// Find `base` or `base.gz` in `dir`.
fn locate(dir: &Path, base: &str) -> Result<PathBuf> {
    // images with channels come as rank-4 files, named idx4
    let idx4 = base.replace("idx3", "idx4");
    for name in [
        base.to_string(),
        format!("{base}.gz"),
        idx4.clone(),
        format!("{idx4}.gz"),
    ] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Data {
        path: dir.join(base),
        msg: format!(
            "missing: expected {base} or {base}.gz in {} (the four IDX files are train-images-idx3-ubyte, \
             train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)",
            dir.display()
        ),
    })
}

fn split_from_bytes(
    img_path: &Path,
    img: &[u8],
    lbl_path: &Path,
    lbl: &[u8],
    classes: usize,
) -> Result<Split> {
    let (idims, images) = parse_idx(img_path, img, 3)?;
    let (ldims, labels) = parse_idx(lbl_path, lbl, 1)?;
    if idims[0] != ldims[0] {
        return Err(Error::Data {
            path: lbl_path.into(),
            msg: format!(
                "{} labels but {} holds {} images: the counts must match",
                ldims[0],
                img_path.display(),
                idims[0]
            ),
        });
    }
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        return Err(Error::Data {
            path: lbl_path.into(),
            msg: format!(
                "label {l} at index {i} is out of range: expected 0..{}",
                classes - 1
            ),
        });
    }
    Ok(Split {
        images,
        labels: labels.into_iter().map(u32::from).collect(),
        height: idims[1],
        width: idims[2],
        channels: idims.get(3).copied().unwrap_or(1),
    })
}

/// Load the four IDX files of a directory.
pub fn load_idx_dir(dir: &Path, classes: usize) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::Data {
            path: dir.into(),
            msg: "no such data folder: give --data DIR with the four IDX files, or install the Debian package \
                  dataset-fashion-mnist"
                .into(),
        });
    }
    let load = |img: &str, lbl: &str| -> Result<Split> {
        let ip = locate(dir, img)?;
        let lp = locate(dir, lbl)?;
        split_from_bytes(&ip, &read_file(&ip)?, &lp, &read_file(&lp)?, classes)
    };
    idx_dataset(&load, dir, classes, dir.display().to_string())
}

/// The train and test splits of a four-file IDX dataset (`load` reads an images file and its labels),
/// whose images must have one shape; `path` names the dataset in errors.
fn idx_dataset(
    load: &dyn Fn(&str, &str) -> Result<Split>,
    path: &Path,
    classes: usize,
    source: String,
) -> Result<Dataset> {
    let train = load("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let test = load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    if (train.height, train.width, train.channels) != (test.height, test.width, test.channels) {
        return Err(Error::Data {
            path: path.into(),
            msg: format!(
                "train images are {}x{}x{} but test images are {}x{}x{}",
                train.height, train.width, train.channels, test.height, test.width, test.channels
            ),
        });
    }
    Ok(Dataset {
        train,
        test,
        classes,
        class_names: None,
        source,
    })
}

/// The sample embedded in the binary (first 4,000 train and 1,000 test images of Fashion-MNIST).
pub fn load_embedded_sample() -> Result<Dataset> {
    let get = |i: usize| -> Result<(PathBuf, Vec<u8>)> {
        let (name, bytes) = SAMPLE_FILES[i];
        let p = PathBuf::from(format!("<embedded>/{name}"));
        let data = maybe_gunzip(&p, bytes.to_vec())?;
        Ok((p, data))
    };
    let (ip, i) = get(0)?;
    let (lp, l) = get(1)?;
    let (tip, ti) = get(2)?;
    let (tlp, tl) = get(3)?;
    Ok(Dataset {
        train: split_from_bytes(&ip, &i, &lp, &l, 10)?,
        test: split_from_bytes(&tip, &ti, &tlp, &tl, 10)?,
        classes: 10,
        class_names: None,
        source: "the Fashion-MNIST sample embedded in clampnet (4,000 train / 1,000 test images)"
            .into(),
    })
}

/// `--data DIR`, then `$CLAMPNET_DATA`, then the Debian package's folder, then the embedded sample.
/// A folder holds either the four IDX files or, as Keras' `image_dataset_from_directory` reads them,
/// `train/<class>/*` and `test/<class>/*` images, converted to the model's `input` (H, W, C).
pub fn find_dataset(explicit: Option<&Path>, input: [usize; 3]) -> Result<Dataset> {
    let load = |dir: &Path| {
        if dir.join("train").is_dir() && dir.join("test").is_dir() {
            load_image_folders(dir, input)
        } else {
            load_idx_dir(dir, 10)
        }
    };
    if let Some(dir) = explicit {
        return load(dir);
    }
    if let Some(dir) = std::env::var_os("CLAMPNET_DATA").filter(|s| !s.is_empty()) {
        return load(Path::new(&dir));
    }
    let debian = Path::new(DEBIAN_DIR);
    if debian.is_dir() {
        return load_idx_dir(debian, 10);
    }
    log::warn!(
        "no dataset given and {DEBIAN_DIR} is absent: using the embedded sample. For the full dataset: \
         apt-get install dataset-fashion-mnist, or --data DIR"
    );
    load_embedded_sample()
}

/// `DIR/train/<class>/*` and `DIR/test/<class>/*`: class names are the folder names in sorted order
/// (as Keras sorts them), images are read with the image crate, converted to grayscale (C = 1) or RGB
/// (C = 3) and resized to H x W.
pub fn load_image_folders(dir: &Path, input: [usize; 3]) -> Result<Dataset> {
    let classes_in = |split: &Path| -> Result<Vec<(String, Vec<PathBuf>)>> {
        let mut classes = Vec::new();
        for e in std::fs::read_dir(split).map_err(|e| Error::io(split, e))? {
            let e = e.map_err(|e| Error::io(split, e))?;
            let class_dir = e.path();
            if class_dir.is_dir() {
                let files: Vec<PathBuf> = std::fs::read_dir(&class_dir)
                    .map_err(|e| Error::io(&class_dir, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                classes.push((e.file_name().to_string_lossy().into_owned(), files));
            }
        }
        Ok(classes)
    };
    let listing = [
        classes_in(&dir.join("train"))?,
        classes_in(&dir.join("test"))?,
    ];
    image_folder_dataset(dir, listing, &|p| image::open(p), input)
}

/// `load_image_folders` of files given with their paths (a folder dropped into the page): each path
/// holds `train/<class>/` or `test/<class>/` (anything before `train` is the folder's own path).
pub fn load_image_files(files: &[(String, Vec<u8>)], input: [usize; 3]) -> Result<Dataset> {
    let mut listing: [Vec<(String, Vec<PathBuf>)>; 2] = Default::default();
    let mut bytes = std::collections::HashMap::new();
    let mut root = None;
    for (name, data) in files {
        let parts: Vec<&str> = name.split('/').collect();
        // as on disk, files outside the class folders (a README, .DS_Store) are not part of the dataset
        let Some(at) = parts
            .iter()
            .position(|p| *p == "train" || *p == "test")
            .filter(|&at| at + 2 < parts.len())
        else {
            continue;
        };
        root.get_or_insert_with(|| parts[..at].join("/"));
        let split = &mut listing[usize::from(parts[at] == "test")];
        let class = parts[at + 1].to_string();
        let path = PathBuf::from(name);
        match split.iter_mut().find(|(c, _)| *c == class) {
            Some((_, paths)) => paths.push(path.clone()),
            None => split.push((class, vec![path.clone()])),
        }
        bytes.insert(path, data);
    }
    let root = PathBuf::from(root.unwrap_or_default());
    // the format from the extension, as `image::open` takes it on disk
    let open =
        |p: &Path| image::load_from_memory_with_format(bytes[p], image::ImageFormat::from_path(p)?);
    image_folder_dataset(&root, listing, &open, input)
}

/// An image-folder dataset from its listing: per split (train, test) its class folders, each with its
/// files; `open` decodes a file. Class names are sorted (as Keras sorts them), and so are files.
fn image_folder_dataset(
    dir: &Path,
    mut listing: [Vec<(String, Vec<PathBuf>)>; 2],
    open: &dyn Fn(&Path) -> image::ImageResult<image::DynamicImage>,
    input: [usize; 3],
) -> Result<Dataset> {
    let [h, w, c] = input;
    for split in listing.iter_mut() {
        split.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, files) in split.iter_mut() {
            files.sort();
        }
    }
    let names: Vec<String> = listing[0].iter().map(|(n, _)| n.clone()).collect();
    let train_dir = dir.join("train");
    if names.len() < 2 {
        return Err(Error::Data {
            path: train_dir,
            msg: format!("found {} class folder(s): an image-folder dataset needs train/<class>/ folders for at least 2 classes", names.len()),
        });
    }
    let read_split = |split: &Path, classes: &[(String, Vec<PathBuf>)]| -> Result<Split> {
        let found: Vec<String> = classes.iter().map(|(n, _)| n.clone()).collect();
        if found != names {
            return Err(Error::Data {
                path: split.into(),
                msg: format!("class folders {found:?} differ from train's {names:?}: train and test need the same classes"),
            });
        }
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for (label, (_, files)) in classes.iter().enumerate() {
            for f in files {
                let img = open(f).map_err(|e| Error::Data {
                    path: f.clone(),
                    msg: format!("cannot read this image: {e}"),
                })?;
                if img.width() == 0 || img.height() == 0 {
                    return Err(Error::Data {
                        path: f.clone(),
                        msg: "the image is empty (0 pixels)".into(),
                    });
                }
                let img =
                    img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle);
                images.extend(if c == 1 {
                    img.to_luma8().into_raw()
                } else {
                    img.to_rgb8().into_raw()
                });
                labels.push(label as u32);
            }
        }
        if labels.is_empty() {
            return Err(Error::Data {
                path: split.into(),
                msg: "no images".into(),
            });
        }
        Ok(Split {
            images,
            labels,
            height: h,
            width: w,
            channels: c,
        })
    };
    let train = read_split(&train_dir, &listing[0])?;
    let test = read_split(&dir.join("test"), &listing[1])?;
    Ok(Dataset {
        classes: names.len(),
        source: format!(
            "image folders in {} ({} classes)",
            dir.display(),
            names.len()
        ),
        class_names: Some(names),
        train,
        test,
    })
}

/// The four IDX files of a dataset given by name (files dropped into the page), as `load_idx_dir`
/// finds them in a folder: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
/// `t10k-labels-idx1-ubyte`, each optionally `.gz` (and `idx4` for images with channels).
pub fn load_idx_files(files: &[(String, Vec<u8>)], classes: usize) -> Result<Dataset> {
    let find = |base: &str| -> Result<(PathBuf, Vec<u8>)> {
        let idx4 = base.replace("idx3", "idx4");
        let wanted = [
            base.to_string(),
            format!("{base}.gz"),
            idx4.clone(),
            format!("{idx4}.gz"),
        ];
        let (name, bytes) = files
            .iter()
            .find(|(n, _)| wanted.iter().any(|w| n.rsplit('/').next() == Some(w)))
            .ok_or_else(|| Error::Data {
                path: base.into(),
                msg: format!(
                    "not among the files given ({}): give the four IDX files train-images-idx3-ubyte, \
                     train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each may be \
                     .gz), or a folder of train/<class>/ and test/<class>/ images",
                    files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })?;
        let path = PathBuf::from(name);
        let data = maybe_gunzip(&path, bytes.clone())?;
        Ok((path, data))
    };
    let split = |img: &str, lbl: &str| -> Result<Split> {
        let (ip, i) = find(img)?;
        let (lp, l) = find(lbl)?;
        split_from_bytes(&ip, &i, &lp, &l, classes)
    };
    let path = Path::new("t10k-images-idx3-ubyte");
    idx_dataset(&split, path, classes, "the IDX files given".into())
}

/// Write the first `n` examples of a split as gzip IDX files (used to cut the embedded sample).
pub fn write_idx_gz(split: &Split, n: usize, images: &Path, labels: &Path) -> Result<()> {
    use std::io::Write;
    let n = n.min(split.len());
    let write = |path: &Path, header: Vec<u8>, body: &[u8]| -> Result<()> {
        let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        gz.write_all(&header)
            .and_then(|_| gz.write_all(body))
            .map_err(|e| Error::io(path, e))?;
        gz.finish().map_err(|e| Error::io(path, e))?;
        Ok(())
    };
    let mut h = vec![0, 0, 8, 3];
    for d in [n as u32, split.height as u32, split.width as u32] {
        h.extend_from_slice(&d.to_be_bytes());
    }
    write(images, h, &split.images[..n * split.per_image()])?;
    let mut h = vec![0, 0, 8, 1];
    h.extend_from_slice(&(n as u32).to_be_bytes());
    let body: Vec<u8> = split.labels[..n].iter().map(|&l| l as u8).collect();
    write(labels, h, &body)
}
