//! Reading model inputs from, and writing results to, NumPy `.npy` files.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use anyhow::{bail, Context, Result};
use bnnc_ir::{Tensor, TensorData};
use npyz::{DType, NpyFile, TypeChar, WriterBuilder};

/// Reads an array of any real or integer dtype as a float32 tensor (the models' inputs are
/// float32; integer pixel arrays convert exactly).
pub fn read_tensor(path: &Path) -> Result<Tensor> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let npy = NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{} is not a .npy file", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!(
            "{}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
            path.display()
        );
    }
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: shape too large", path.display()))?;
    let DType::Plain(ty) = npy.dtype() else {
        bail!("{}: structured arrays are not supported", path.display());
    };
    let ctx = || format!("cannot read the data of {}", path.display());
    let data: Vec<f32> = match (ty.type_char(), ty.size_field()) {
        (TypeChar::Float, 4) => npy.into_vec::<f32>().with_context(ctx)?,
        (TypeChar::Float, 8) => npy
            .into_vec::<f64>()
            .with_context(ctx)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        (TypeChar::Int, _) => npy
            .into_vec::<i64>()
            .with_context(ctx)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        (TypeChar::Uint, _) => npy
            .into_vec::<u64>()
            .with_context(ctx)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        (TypeChar::Bool, _) => npy
            .into_vec::<bool>()
            .with_context(ctx)?
            .into_iter()
            .map(|x| x as u8 as f32)
            .collect(),
        _ => bail!(
            "{}: dtype {} is not supported (use float32)",
            path.display(),
            ty
        ),
    };
    Tensor::try_f32(shape, data)
        .with_context(|| format!("{}: the data does not match the shape", path.display()))
}

/// Writes a tensor as float32, or int64 for index tensors (TopK).
pub fn write_tensor(path: &Path, t: &Tensor) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let ctx = || format!("cannot write {}", path.display());
    let mut out = BufWriter::new(file);
    match t.data() {
        TensorData::F32(v) => {
            let mut w = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut out)
                .begin_nd()
                .with_context(ctx)?;
            w.extend(v.iter().copied()).with_context(ctx)?;
            w.finish().with_context(ctx)?;
        }
        TensorData::I64(v) => {
            let mut w = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut out)
                .begin_nd()
                .with_context(ctx)?;
            w.extend(v.iter().copied()).with_context(ctx)?;
            w.finish().with_context(ctx)?;
        }
    }
    Ok(())
}
