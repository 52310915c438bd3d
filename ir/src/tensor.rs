//! Tensors with data: constants in the graph and values in the interpreter.

use crate::types::{checked_numel, Shape};

/// The elements of a tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Every numeric value the network computes (the QONNX executor's float32 world).
    F32(Vec<f32>),
    /// Indices and shapes.
    I64(Vec<i64>),
}

/// A dense, row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Shape,
    data: TensorData,
}

impl Tensor {
    /// A float tensor. Panics if `data.len()` is not the product of `shape`: callers that hold
    /// untrusted sizes use [`Tensor::try_f32`].
    pub fn f32(shape: Shape, data: Vec<f32>) -> Self {
        Self::try_f32(shape, data).expect("tensor length does not match its shape")
    }

    /// An i64 tensor; panics as [`Tensor::f32`] does.
    pub fn i64(shape: Shape, data: Vec<i64>) -> Self {
        Self::try_i64(shape, data).expect("tensor length does not match its shape")
    }

    /// A float tensor, or `None` if the length does not match the shape.
    pub fn try_f32(shape: Shape, data: Vec<f32>) -> Option<Self> {
        (checked_numel(&shape)? == data.len()).then_some(Tensor {
            shape,
            data: TensorData::F32(data),
        })
    }

    /// An i64 tensor, or `None` if the length does not match the shape.
    pub fn try_i64(shape: Shape, data: Vec<i64>) -> Option<Self> {
        (checked_numel(&shape)? == data.len()).then_some(Tensor {
            shape,
            data: TensorData::I64(data),
        })
    }

    /// A float scalar (shape `[]`).
    pub fn scalar(v: f32) -> Self {
        Tensor::f32(vec![], vec![v])
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// Whether the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The float elements, or `None` for an i64 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    /// The i64 elements, or `None` for a float tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// Every element as f64 (exact for both kinds up to 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Every element as f32 (i64 converted as numpy's `astype(float32)` would).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Every element as i64 (f32 truncated toward zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I64(v) => v.clone(),
        }
    }

    /// The same data under another shape of the same size.
    pub fn reshaped(self, shape: Shape) -> Option<Self> {
        (checked_numel(&shape)? == self.len()).then_some(Tensor {
            shape,
            data: self.data,
        })
    }

    /// Consumes the tensor, giving its parts.
    pub fn into_parts(self) -> (Shape, TensorData) {
        (self.shape, self.data)
    }
}
