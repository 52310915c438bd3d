//! `TensorProto` to [`Tensor`]: data types, shapes and element data from `raw_data`, the typed
//! fields or external files.
//!
//! The file is untrusted: every size it declares is checked (non-negative extents, a product
//! that does not overflow, at most [`MAX_ELEMENTS`] elements, exactly as many bytes or values
//! as the shape needs) before anything is allocated from it.

use std::path::Path;

use bnnc_ir::{ElemType, IntType, Shape, Tensor};

use crate::error::FrontendError;
use crate::external_data;
use crate::proto::{DataLocation, TensorProto};

/// The most elements one tensor may have: the IR's limit ([`bnnc_ir::infer::MAX_ELEMENTS`]).
pub const MAX_ELEMENTS: usize = bnnc_ir::infer::MAX_ELEMENTS;

/// The ONNX data types (`TensorProto.DataType`) the importer reads.
///
/// The IR computes in f32 (as the QONNX executor does), so every type but `int64` becomes f32
/// data: exact for every integer type up to 32 bits except large int32 values, which no
/// quantized network stores. `int64` (shapes, indices) stays i64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Float,
    Uint8,
    Int8,
    Uint16,
    Int16,
    Int32,
    Int64,
    Bool,
    Double,
}

impl DataType {
    /// The data type of an ONNX code, or `None` for a type the importer does not read.
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            1 => DataType::Float,
            2 => DataType::Uint8,
            3 => DataType::Int8,
            4 => DataType::Uint16,
            5 => DataType::Int16,
            6 => DataType::Int32,
            7 => DataType::Int64,
            9 => DataType::Bool,
            11 => DataType::Double,
            _ => return None,
        })
    }

    /// The ONNX name of a data type code, for messages (also for codes the importer rejects).
    pub fn code_name(code: i32) -> &'static str {
        match code {
            0 => "UNDEFINED",
            1 => "FLOAT",
            2 => "UINT8",
            3 => "INT8",
            4 => "UINT16",
            5 => "INT16",
            6 => "INT32",
            7 => "INT64",
            8 => "STRING",
            9 => "BOOL",
            10 => "FLOAT16",
            11 => "DOUBLE",
            12 => "UINT32",
            13 => "UINT64",
            14 => "COMPLEX64",
            15 => "COMPLEX128",
            16 => "BFLOAT16",
            17..=20 => "FLOAT8",
            21 => "UINT4",
            22 => "INT4",
            23 => "FLOAT4E2M1",
            _ => "an unknown type",
        }
    }

    /// Bytes per element in `raw_data` and external files.
    fn byte_width(self) -> usize {
        match self {
            DataType::Uint8 | DataType::Int8 | DataType::Bool => 1,
            DataType::Uint16 | DataType::Int16 => 2,
            DataType::Float | DataType::Int32 => 4,
            DataType::Int64 | DataType::Double => 8,
        }
    }

    /// The integer range of an integer type narrower than 64 bits (`bool` is binary).
    pub fn int_type(self) -> Option<IntType> {
        match self {
            DataType::Uint8 => Some(IntType::Unsigned(8)),
            DataType::Int8 => Some(IntType::Signed(8)),
            DataType::Uint16 => Some(IntType::Unsigned(16)),
            DataType::Int16 => Some(IntType::Signed(16)),
            DataType::Int32 => Some(IntType::Signed(32)),
            DataType::Bool => Some(IntType::Binary),
            DataType::Float | DataType::Double | DataType::Int64 => None,
        }
    }

    /// The element type of a constant stored in this type: integers keep their range (an int8
    /// zero point is an `i8` constant), floats are `f32` and int64 is `i64`.
    pub fn elem_type(self) -> ElemType {
        match (self, self.int_type()) {
            (_, Some(int)) => ElemType::Int(int),
            (DataType::Int64, None) => ElemType::I64,
            _ => ElemType::F32,
        }
    }
}

/// A decoded tensor and the ONNX data type it was stored in.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedTensor {
    pub tensor: Tensor,
    pub data_type: DataType,
}

/// Decodes `proto`, which is called `name` in messages. External data is looked up in
/// `base_dir` (`None`: external data is an error).
pub fn decode_tensor(
    proto: &TensorProto,
    name: &str,
    base_dir: Option<&Path>,
) -> Result<DecodedTensor, FrontendError> {
    let err = |reason: String| FrontendError::tensor(name, reason);
    let data_type = DataType::from_code(proto.data_type).ok_or_else(|| {
        err(format!(
            "data type {} ({}) is not supported",
            DataType::code_name(proto.data_type),
            proto.data_type
        ))
    })?;
    let (shape, numel) = checked_shape(&proto.dims).map_err(err)?;

    if proto.data_location == DataLocation::External as i32 {
        // numel <= MAX_ELEMENTS and width <= 8: no overflow.
        let byte_len = numel * data_type.byte_width();
        let bytes = external_data::read(&proto.external_data, name, base_dir, byte_len as u64)?;
        return from_le_bytes(data_type, shape, &bytes).map_err(err);
    }
    if proto.data_location != DataLocation::Default as i32 {
        return Err(err(format!(
            "unknown data location {}",
            proto.data_location
        )));
    }
    if !proto.raw_data.is_empty() {
        let expected = numel * data_type.byte_width();
        if proto.raw_data.len() != expected {
            return Err(err(format!(
                "raw_data holds {} bytes, shape {:?} of {} needs {expected}",
                proto.raw_data.len(),
                shape,
                DataType::code_name(proto.data_type)
            )));
        }
        return from_le_bytes(data_type, shape, &proto.raw_data).map_err(err);
    }
    from_typed_fields(proto, data_type, shape, numel).map_err(err)
}

/// The shape of `dims` and its number of elements, checked: no negative extent, and the
/// product of the non-zero extents at most [`MAX_ELEMENTS`], so that no product of extents
/// taken in any order can overflow later (even in a tensor with no element).
pub fn checked_shape(dims: &[i64]) -> Result<(Shape, usize), String> {
    let mut shape = Shape::with_capacity(dims.len().min(64));
    let mut nonzero_product = 1usize;
    for &d in dims {
        let extent =
            usize::try_from(d).map_err(|_| format!("negative extent {d} in shape {dims:?}"))?;
        nonzero_product = nonzero_product
            .checked_mul(extent.max(1))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| format!("shape {dims:?} has more than {MAX_ELEMENTS} elements"))?;
        shape.push(extent);
    }
    let numel = if shape.contains(&0) {
        0
    } else {
        nonzero_product
    };
    Ok((shape, numel))
}

/// Elements from fixed-width little-endian bytes; `bytes.len()` is already checked against the
/// shape.
fn from_le_bytes(data_type: DataType, shape: Shape, bytes: &[u8]) -> Result<DecodedTensor, String> {
    fn floats<const N: usize>(bytes: &[u8], convert: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|c| convert(c.try_into().unwrap_or([0; N])))
            .collect()
    }
    let tensor = match data_type {
        DataType::Int64 => {
            let data = bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            Tensor::try_i64(shape, data)
        }
        DataType::Float => Tensor::try_f32(shape, floats(bytes, f32::from_le_bytes)),
        DataType::Double => Tensor::try_f32(shape, floats(bytes, |b| f64::from_le_bytes(b) as f32)),
        DataType::Uint8 => Tensor::try_f32(shape, floats(bytes, |[b]: [u8; 1]| f32::from(b))),
        DataType::Int8 => {
            Tensor::try_f32(shape, floats(bytes, |b| f32::from(i8::from_le_bytes(b))))
        }
        DataType::Bool => Tensor::try_f32(
            shape,
            floats(bytes, |[b]: [u8; 1]| f32::from(u8::from(b != 0))),
        ),
        DataType::Uint16 => {
            Tensor::try_f32(shape, floats(bytes, |b| f32::from(u16::from_le_bytes(b))))
        }
        DataType::Int16 => {
            Tensor::try_f32(shape, floats(bytes, |b| f32::from(i16::from_le_bytes(b))))
        }
        DataType::Int32 => Tensor::try_f32(shape, floats(bytes, |b| i32::from_le_bytes(b) as f32)),
    };
    let tensor = tensor.ok_or("the data does not fill the shape")?;
    Ok(DecodedTensor { tensor, data_type })
}

/// Elements from the typed field that `data_type` stores its data in.
fn from_typed_fields(
    proto: &TensorProto,
    data_type: DataType,
    shape: Shape,
    numel: usize,
) -> Result<DecodedTensor, String> {
    let check_len = |field: &str, len: usize| {
        if len == numel {
            Ok(())
        } else {
            Err(format!(
                "{field} holds {len} values, shape {shape:?} needs {numel}"
            ))
        }
    };
    let tensor = match data_type {
        DataType::Float => {
            check_len("float_data", proto.float_data.len())?;
            Tensor::try_f32(shape.clone(), proto.float_data.clone())
        }
        DataType::Double => {
            check_len("double_data", proto.double_data.len())?;
            Tensor::try_f32(
                shape.clone(),
                proto.double_data.iter().map(|&x| x as f32).collect(),
            )
        }
        DataType::Int64 => {
            check_len("int64_data", proto.int64_data.len())?;
            Tensor::try_i64(shape.clone(), proto.int64_data.clone())
        }
        DataType::Uint8
        | DataType::Int8
        | DataType::Uint16
        | DataType::Int16
        | DataType::Int32
        | DataType::Bool => {
            check_len("int32_data", proto.int32_data.len())?;
            let range = data_type
                .int_type()
                .filter(|_| data_type != DataType::Int32);
            if let Some(bad) = proto
                .int32_data
                .iter()
                .find(|&&v| range.is_some_and(|t| !t.contains(f64::from(v))))
            {
                return Err(format!(
                    "int32_data holds {bad}, which is not a {} value",
                    DataType::code_name(proto.data_type)
                ));
            }
            Tensor::try_f32(
                shape.clone(),
                proto.int32_data.iter().map(|&v| v as f32).collect(),
            )
        }
    };
    let tensor = tensor.ok_or_else(|| format!("the data does not fill shape {shape:?}"))?;
    Ok(DecodedTensor { tensor, data_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dims: &[i64], data_type: i32) -> TensorProto {
        TensorProto {
            name: "t".into(),
            dims: dims.to_vec(),
            data_type,
            ..Default::default()
        }
    }

    #[test]
    fn raw_float_and_int8() {
        let mut t = proto(&[2], 1);
        t.raw_data = [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat();
        assert_eq!(
            decode_tensor(&t, "t", None).unwrap().tensor,
            Tensor::f32(vec![2], vec![1.5, -2.0])
        );

        let mut t = proto(&[3], 3);
        t.raw_data = vec![0xff, 0x01, 0x80];
        let d = decode_tensor(&t, "t", None).unwrap();
        assert_eq!(d.tensor, Tensor::f32(vec![3], vec![-1.0, 1.0, -128.0]));
        assert_eq!(d.data_type.elem_type(), ElemType::Int(IntType::Signed(8)));
    }

    #[test]
    fn typed_fields() {
        let mut t = proto(&[2, 1], 7);
        t.int64_data = vec![-1, 784];
        assert_eq!(
            decode_tensor(&t, "t", None).unwrap().tensor,
            Tensor::i64(vec![2, 1], vec![-1, 784])
        );

        let mut t = proto(&[], 2);
        t.int32_data = vec![255];
        assert_eq!(
            decode_tensor(&t, "t", None).unwrap().tensor,
            Tensor::f32(vec![], vec![255.0])
        );

        t.int32_data = vec![256];
        assert!(decode_tensor(&t, "t", None).is_err());

        let mut t = proto(&[2], 11);
        t.double_data = vec![0.25, 1e300];
        assert_eq!(
            decode_tensor(&t, "t", None).unwrap().tensor,
            Tensor::f32(vec![2], vec![0.25, f32::INFINITY])
        );
    }

    #[test]
    fn sizes_are_checked() {
        let mut t = proto(&[3], 1);
        t.raw_data = vec![0; 11];
        let err = decode_tensor(&t, "t", None).unwrap_err().to_string();
        assert!(
            err.contains("raw_data holds 11 bytes") && err.contains("needs 12"),
            "{err}"
        );

        t.raw_data.clear();
        t.float_data = vec![1.0];
        assert!(decode_tensor(&t, "t", None).is_err());

        assert!(checked_shape(&[-1]).is_err());
        assert!(checked_shape(&[1 << 31, 2]).is_err());
        assert!(checked_shape(&[i64::MAX, i64::MAX]).is_err());
        assert_eq!(
            checked_shape(&[0, i64::MAX]),
            Err(format!(
                "shape {:?} has more than {MAX_ELEMENTS} elements",
                [0, i64::MAX]
            ))
        );
        assert_eq!(checked_shape(&[2, 0]).unwrap(), (vec![2, 0], 0));
    }

    #[test]
    fn unsupported_type_is_named() {
        let err = decode_tensor(&proto(&[1], 8), "names", None)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "tensor `names`: data type STRING (8) is not supported");
    }
}
