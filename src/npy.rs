//! Reading model inputs from, and writing results to, NumPy `.npy` files.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use bnnc_ir::{Tensor, TensorData};
use npyz::{DType, Deserialize, NpyFile, Serialize, TypeChar, WriterBuilder};

/// Reads an array of any real, integer or bool dtype as a float32 tensor (the models' inputs
/// are float32; integer pixel arrays convert exactly).
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let npy = NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{} is not a .npy file", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!(
            "{}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
            path.display()
        );
    }
    let DType::Plain(ty) = npy.dtype() else {
        bail!("{}: structured arrays are not supported", path.display());
    };
    // The header is untrusted: the data it declares must be in the file before anything is
    // allocated for it.
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    let bytes = shape
        .iter()
        .try_fold(ty.size_field(), |n, &d| n.checked_mul(d as u64));
    if bytes.is_none_or(|b| b > file_len) {
        bail!(
            "{}: the header declares shape {shape:?}, more data than the file holds",
            path.display()
        );
    }
    let data = match (ty.type_char(), ty.size_field()) {
        (TypeChar::Float, 4) => convert(npy, |x: f32| x),
        (TypeChar::Float, 8) => convert(npy, |x: f64| x as f32),
        (TypeChar::Int, 1) => convert(npy, |x: i8| f32::from(x)),
        (TypeChar::Int, 2) => convert(npy, |x: i16| f32::from(x)),
        (TypeChar::Int, 4) => convert(npy, |x: i32| x as f32),
        (TypeChar::Int, 8) => convert(npy, |x: i64| x as f32),
        (TypeChar::Uint, 1) => convert(npy, |x: u8| f32::from(x)),
        (TypeChar::Uint, 2) => convert(npy, |x: u16| f32::from(x)),
        (TypeChar::Uint, 4) => convert(npy, |x: u32| x as f32),
        (TypeChar::Uint, 8) => convert(npy, |x: u64| x as f32),
        (TypeChar::Bool, _) => convert(npy, |x: bool| f32::from(u8::from(x))),
        _ => bail!(
            "{}: dtype {ty} is not supported (use float32)",
            path.display()
        ),
    }
    .with_context(|| format!("cannot read the data of {}", path.display()))?;
    Tensor::try_f32(shape, data)
        .with_context(|| format!("{}: the data does not match the shape", path.display()))
}

fn convert<R: Read, T: Deserialize>(
    npy: NpyFile<R>,
    to_f32: impl Fn(T) -> f32,
) -> std::io::Result<Vec<f32>> {
    Ok(npy.into_vec::<T>()?.into_iter().map(to_f32).collect())
}

/// Writes a tensor as float32, or int64 for index tensors (TopK).
pub fn write_tensor(path: &Path, t: &Tensor) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let out = BufWriter::new(file);
    match t.data() {
        TensorData::F32(v) => write_array(out, &shape, v),
        TensorData::I64(v) => write_array(out, &shape, v),
    }
    .with_context(|| format!("cannot write {}", path.display()))
}

fn write_array<T: Serialize + npyz::AutoSerialize + Copy>(
    mut out: impl std::io::Write,
    shape: &[u64],
    data: &[T],
) -> std::io::Result<()> {
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut out)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()
}
