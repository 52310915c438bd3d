//! Element types and tensor types.
//!
//! Element types are data, not strings: a value is `f32`, an integer of a known range
//! (bipolar, binary, `iN`, `uN`), or such an integer times a float scale. The interpreter
//! always computes with the numbers (as the QONNX executor does, in float32); the types record
//! what the passes and backends may rely on, such as "this tensor holds only -1 and +1".

use std::fmt;
use std::sync::Arc;

/// The integer a quantized tensor holds before any scale is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntType {
    /// {-1, +1}, one bit (bit 1 = +1).
    Bipolar,
    /// {0, 1}, one bit.
    Binary,
    /// Two's complement with the given number of bits (2..=64).
    Signed(u8),
    /// Unsigned with the given number of bits (2..=64).
    Unsigned(u8),
}

impl IntType {
    /// The smallest value of the type.
    pub fn min(self) -> i64 {
        match self {
            IntType::Bipolar => -1,
            IntType::Binary => 0,
            IntType::Signed(64) => i64::MIN,
            IntType::Signed(b) => -(1i64 << (b - 1)),
            IntType::Unsigned(_) => 0,
        }
    }

    /// The largest value of the type.
    pub fn max(self) -> i64 {
        match self {
            IntType::Bipolar | IntType::Binary => 1,
            IntType::Signed(64) => i64::MAX,
            IntType::Signed(b) => (1i64 << (b - 1)) - 1,
            IntType::Unsigned(b) if b >= 63 => i64::MAX,
            IntType::Unsigned(b) => (1i64 << b) - 1,
        }
    }

    /// Bits of storage one element needs.
    pub fn bits(self) -> u8 {
        match self {
            IntType::Bipolar | IntType::Binary => 1,
            IntType::Signed(b) | IntType::Unsigned(b) => b,
        }
    }

    /// The bit planes of the type's integers, `sum_p c_p * 2^p * bit_p`: their number, and
    /// whether the top one counts negatively (`c = -1`, two's complement). `None` for
    /// bipolar values, which are not sums of planes.
    pub fn planes(self) -> Option<(usize, bool)> {
        match self {
            IntType::Bipolar => None,
            IntType::Binary => Some((1, false)),
            IntType::Unsigned(b) => Some((b.into(), false)),
            IntType::Signed(b) => Some((b.into(), true)),
        }
    }

    /// Whether the value `v` belongs to the type.
    pub fn contains(self, v: f64) -> bool {
        if v.fract() != 0.0 {
            return false;
        }
        match self {
            IntType::Bipolar => v == -1.0 || v == 1.0,
            _ => v >= self.min() as f64 && v <= self.max() as f64,
        }
    }

    /// The narrowest signed or unsigned type holding every integer in `lo..=hi`.
    pub fn covering(lo: i64, hi: i64) -> IntType {
        debug_assert!(lo <= hi);
        if lo >= 0 {
            let bits = (64 - (hi as u64).leading_zeros()).max(1);
            if bits == 1 {
                return IntType::Binary;
            }
            return IntType::Unsigned(bits as u8);
        }
        // Smallest b with -2^(b-1) <= lo and hi <= 2^(b-1) - 1.
        (2..=64u8)
            .map(IntType::Signed)
            .find(|t| t.min() <= lo && hi <= t.max())
            .unwrap_or(IntType::Signed(64))
    }
}

impl fmt::Display for IntType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntType::Bipolar => f.write_str("bipolar"),
            IntType::Binary => f.write_str("binary"),
            IntType::Signed(b) => write!(f, "i{b}"),
            IntType::Unsigned(b) => write!(f, "u{b}"),
        }
    }
}

/// The float scale of a scaled integer type.
#[derive(Clone, Debug, PartialEq)]
pub enum Scale {
    /// One scale for the whole tensor.
    Tensor(f32),
    /// One scale per index along `axis`.
    Channel { axis: usize, values: Arc<[f32]> },
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scale::Tensor(s) => write!(f, "{s:?}"),
            Scale::Channel { axis, values } => write!(f, "[{}]@{axis}", values.len()),
        }
    }
}

/// The type of one element of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum ElemType {
    /// IEEE single precision.
    F32,
    /// An integer of the given range, stored exactly.
    Int(IntType),
    /// An integer of the given range times a scale: `value = int * scale`.
    Scaled(IntType, Scale),
}

impl ElemType {
    /// `bipolar`: {-1, +1}.
    pub const BIPOLAR: ElemType = ElemType::Int(IntType::Bipolar);
    /// `binary`: {0, 1}.
    pub const BINARY: ElemType = ElemType::Int(IntType::Binary);
    /// `i64`, the type of indices (TopK) and shapes.
    pub const I64: ElemType = ElemType::Int(IntType::Signed(64));

    /// The integer type beneath any scale, or `None` for `f32`.
    pub fn int_type(&self) -> Option<IntType> {
        match self {
            ElemType::F32 => None,
            ElemType::Int(t) | ElemType::Scaled(t, _) => Some(*t),
        }
    }

    /// Bits per element as stored by a backend (32 for `f32`).
    pub fn bits(&self) -> u8 {
        self.int_type().map_or(32, IntType::bits)
    }

    /// `(int, scale)` of plain integers (scale 1) or integers times one power-of-two scale:
    /// values whose products by powers of two, and sums below 2^24 units, are exact in f32.
    pub fn exact_scaled(&self) -> Option<(IntType, f32)> {
        match self {
            ElemType::Int(t) => Some((*t, 1.0)),
            ElemType::Scaled(t, Scale::Tensor(s)) if is_power_of_two(*s) => Some((*t, *s)),
            _ => None,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElemType::F32 => f.write_str("f32"),
            ElemType::Int(t) => write!(f, "{t}"),
            ElemType::Scaled(t, s) => write!(f, "{t}*{s}"),
        }
    }
}

/// Whether `s` is a positive power of two (a normal float with an empty mantissa), so that
/// multiplying by it, or dividing, is exact.
pub fn is_power_of_two(s: f32) -> bool {
    s > 0.0 && s.is_normal() && s.to_bits() & 0x007f_ffff == 0
}

/// A static shape: the extent of every axis.
pub type Shape = Vec<usize>;

/// Number of elements of a shape, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The type of a tensor value: element type and static shape.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorType {
    pub elem: ElemType,
    pub shape: Shape,
}

impl TensorType {
    /// A tensor type from its parts.
    pub fn new(elem: ElemType, shape: Shape) -> Self {
        TensorType { elem, shape }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.elem)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            (IntType::Signed(2).min(), IntType::Signed(2).max()),
            (-2, 1)
        );
        assert_eq!(
            (IntType::Unsigned(4).min(), IntType::Unsigned(4).max()),
            (0, 15)
        );
        assert_eq!(IntType::Signed(64).min(), i64::MIN);
        assert!(IntType::Bipolar.contains(-1.0) && !IntType::Bipolar.contains(0.0));
        assert!(!IntType::Signed(8).contains(0.5));
    }

    #[test]
    fn covering() {
        assert_eq!(IntType::covering(0, 1), IntType::Binary);
        assert_eq!(IntType::covering(0, 255), IntType::Unsigned(8));
        assert_eq!(IntType::covering(-2, 1), IntType::Signed(2));
        assert_eq!(IntType::covering(-784, 784), IntType::Signed(11));
    }

    #[test]
    fn display() {
        let t = TensorType::new(
            ElemType::Scaled(IntType::Signed(8), Scale::Tensor(0.5)),
            vec![1, 3],
        );
        assert_eq!(t.to_string(), "i8*0.5[1,3]");
        assert_eq!(ElemType::BIPOLAR.to_string(), "bipolar");
    }
}
