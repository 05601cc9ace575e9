//! The `.keras` file: a zip holding `metadata.json` (Keras' version, the date), `config.json` (the
//! model's JSON, with `compile_config` when compiled) and `model.weights.h5`. clampnet writes the entries
//! stored (uncompressed), as Keras does, and reads stored or deflated ones.

use std::io::{Cursor, Read, Write};

/// The parts of a `.keras` file.
#[derive(Clone, Debug)]
pub struct Archive {
    pub config: String,
    pub metadata: Option<String>,
    /// `model.weights.h5`
    pub weights: Option<Vec<u8>>,
}

const MAX_JSON: u64 = 64 << 20;
const MAX_WEIGHTS: u64 = 16 << 30;

fn entry<R: Read + std::io::Seek>(
    z: &mut zip::ZipArchive<R>,
    name: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, String> {
    let e = match z.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format!("{name} in the zip: {e}")),
    };
    let mut out = Vec::new();
    e.take(limit + 1).read_to_end(&mut out).map_err(|err| {
        format!("{name} in the zip is not readable ({err}); was the file truncated?")
    })?;
    if out.len() as u64 > limit {
        return Err(format!("{name} in the zip is larger than {limit} bytes"));
    }
    Ok(Some(out))
}

/// Read a `.keras` file's bytes.
pub fn read(bytes: &[u8]) -> Result<Archive, String> {
    if bytes.len() < 4 || &bytes[..2] != b"PK" {
        return Err(
            "not a .keras file: it is not a zip (a .keras file is written by `model.save(\"model.keras\")`)".into(),
        );
    }
    let mut z = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a readable zip ({e}); was the file truncated?"))?;
    let config = entry(&mut z, "config.json", MAX_JSON)?.ok_or(
        "the zip has no config.json: not a Keras 3 .keras file (Keras 2's SavedModel folders and .h5 files are not read)",
    )?;
    let config =
        String::from_utf8(config).map_err(|_| "config.json is not UTF-8 text".to_string())?;
    let metadata =
        entry(&mut z, "metadata.json", MAX_JSON)?.map(|m| String::from_utf8_lossy(&m).into_owned());
    let weights = entry(&mut z, "model.weights.h5", MAX_WEIGHTS)?;
    Ok(Archive {
        config,
        metadata,
        weights,
    })
}

/// A `.keras` file's bytes: `config` (the model JSON), `weights` (an HDF5 weights file), and metadata
/// naming the Keras version whose format this is, with clampnet's run settings (`clampnet`: a checkpoint's
/// `RunMeta`, which Keras ignores).
pub fn write(
    config: &str,
    weights: &[u8],
    clampnet: Option<&std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let mut metadata = serde_json::json!({
        "keras_version": super::KERAS_VERSION,
        "date_saved": date(),
    });
    if let Some(c) = clampnet {
        let sorted: std::collections::BTreeMap<_, _> = c.iter().collect();
        metadata["clampnet"] = serde_json::json!(sorted);
    }
    let metadata = metadata.to_string();
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(weights.len() as u64 >= u32::MAX as u64);
    let mut put = |name: &str, data: &[u8]| -> Result<(), String> {
        z.start_file(name, opts).map_err(|e| e.to_string())?;
        z.write_all(data).map_err(|e| e.to_string())
    };
    put("metadata.json", metadata.as_bytes())?;
    put("config.json", config.as_bytes())?;
    put("model.weights.h5", weights)?;
    Ok(z.finish().map_err(|e| e.to_string())?.into_inner())
}

/// Now, as Keras writes it ("2026-11-30@15:57:21", UTC).
fn date() -> String {
    let s = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (s / 86_400, s % 86_400);
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}@{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
