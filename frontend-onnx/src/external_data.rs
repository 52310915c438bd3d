//! ONNX external data: tensor bytes kept in a file beside the model
//! (`data_location = EXTERNAL`, entries `location`, `offset`, `length`).
//!
//! The location comes from an untrusted file, so it must name a file inside the model's
//! directory: relative, without `..`, and still inside that directory once symbolic links are
//! resolved. Only the declared range is read, after checking it lies within the file and holds
//! exactly the bytes the tensor's shape needs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::error::FrontendError;
use crate::proto::StringStringEntryProto;

/// Where a tensor's bytes are: a file relative to the model's directory and a byte range.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Location {
    path: String,
    offset: u64,
    /// `None`: up to the end of the file.
    length: Option<u64>,
}

/// Reads the `expected_len` bytes of tensor `tensor` described by `entries`, from a file in
/// `base_dir` (the model's directory).
pub fn read(
    entries: &[StringStringEntryProto],
    tensor: &str,
    base_dir: Option<&Path>,
    expected_len: u64,
) -> Result<Vec<u8>, FrontendError> {
    let err = |reason: String| FrontendError::external_data(tensor, reason);
    let location = parse_entries(entries).map_err(err)?;
    let base_dir = base_dir.ok_or_else(|| {
        err(
            "the model was imported from memory without a directory to read external data from"
                .into(),
        )
    })?;
    let path = resolve_inside(base_dir, &location.path).map_err(err)?;

    let io_err = |e: std::io::Error| err(format!("cannot read `{}`: {e}", location.path));
    let mut file = File::open(&path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    if location.offset > file_len {
        return Err(err(format!(
            "offset {} is past the end of `{}` ({file_len} bytes)",
            location.offset, location.path
        )));
    }
    let length = location.length.unwrap_or(file_len - location.offset);
    match location.offset.checked_add(length) {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(err(format!(
                "range {}+{length} is outside `{}` ({file_len} bytes)",
                location.offset, location.path
            )))
        }
    }
    if length != expected_len {
        return Err(err(format!(
            "holds {length} bytes, the tensor's shape needs {expected_len}"
        )));
    }
    // `length` is now bounded both by the file's size and by the checked shape.
    let length =
        usize::try_from(length).map_err(|_| err(format!("{length} bytes do not fit in memory")))?;
    let mut bytes = vec![0u8; length];
    file.seek(SeekFrom::Start(location.offset))
        .map_err(io_err)?;
    file.read_exact(&mut bytes).map_err(io_err)?;
    Ok(bytes)
}

/// The location, offset and length among the entries (others, such as `checksum`, are ignored).
fn parse_entries(entries: &[StringStringEntryProto]) -> Result<Location, String> {
    let mut location = Location {
        path: String::new(),
        offset: 0,
        length: None,
    };
    let number = |key: &str, value: &str| {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("`{key}` is `{value}`, not a byte count"))
    };
    for entry in entries {
        match entry.key.as_str() {
            "location" => location.path = entry.value.clone(),
            "offset" => location.offset = number("offset", &entry.value)?,
            "length" => location.length = Some(number("length", &entry.value)?),
            _ => {}
        }
    }
    if location.path.is_empty() {
        return Err("no `location` entry".into());
    }
    Ok(location)
}

/// `base_dir/location`, provided it stays inside `base_dir`.
fn resolve_inside(base_dir: &Path, location: &str) -> Result<PathBuf, String> {
    let relative = Path::new(location);
    let escapes = relative.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    });
    if relative.is_absolute() || escapes {
        return Err(format!(
            "location `{location}` is not a path inside the model's directory"
        ));
    }
    // Symbolic links can still lead out: compare the real paths.
    let base = base_dir.canonicalize().map_err(|e| {
        format!(
            "cannot resolve the model's directory `{}`: {e}",
            base_dir.display()
        )
    })?;
    let path = base
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("cannot open `{location}`: {e}"))?;
    if !path.starts_with(&base) {
        return Err(format!(
            "location `{location}` leads outside the model's directory"
        ));
    }
    if !path.is_file() {
        return Err(format!("location `{location}` is not a file"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> StringStringEntryProto {
        StringStringEntryProto {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn parses_entries() {
        let loc = parse_entries(&[
            entry("location", "w.bin"),
            entry("offset", "16"),
            entry("checksum", "x"),
        ])
        .unwrap();
        assert_eq!(
            loc,
            Location {
                path: "w.bin".into(),
                offset: 16,
                length: None
            }
        );
        assert!(parse_entries(&[entry("offset", "0")]).is_err());
        assert!(parse_entries(&[entry("location", "w"), entry("length", "-1")]).is_err());
    }

    #[test]
    fn rejects_escaping_locations() {
        let dir = std::env::temp_dir();
        for bad in ["../x", "a/../../x", "/etc/passwd", "a/../b/../../c"] {
            let err = resolve_inside(&dir, bad).unwrap_err();
            assert!(err.contains("not a path inside"), "{bad}: {err}");
        }
    }
}
