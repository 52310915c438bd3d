//! FINN / QONNX datatype names (`finn_datatype` annotations, MultiThreshold's `out_dtype`).

use bnnc_ir::{ElemType, IntType, Scale};

/// The element type a FINN datatype name stands for, or the reason it stands for none.
///
/// `BIPOLAR`, `BINARY`, `TERNARY` ({-1, 0, 1}, held as `i2`), `INTn`, `UINTn`,
/// `FIXED<w,i>` (a `w`-bit signed integer times `2^(i - w)`), and the float names `FLOAT32`,
/// `FLOAT16`, `SCALEDINTn` and `FLOAT<...>`, which all become `f32` (a scaled integer of unknown
/// scale promises nothing a pass could use).
pub fn parse_finn_datatype(name: &str) -> Result<ElemType, String> {
    let name = name.trim();
    let unknown = || format!("unknown FINN datatype `{name}`");
    match name {
        "BIPOLAR" => return Ok(ElemType::BIPOLAR),
        "BINARY" => return Ok(ElemType::BINARY),
        "TERNARY" => return Ok(ElemType::Int(IntType::Signed(2))),
        "FLOAT32" | "FLOAT16" => return Ok(ElemType::F32),
        _ => {}
    }
    if name.starts_with("SCALEDINT") || name.starts_with("FLOAT<") {
        return Ok(ElemType::F32);
    }
    if let Some(bits) = name.strip_prefix("UINT") {
        return match parse_bits(bits).ok_or_else(unknown)? {
            1 => Ok(ElemType::BINARY),
            b => Ok(ElemType::Int(IntType::Unsigned(b))),
        };
    }
    if let Some(bits) = name.strip_prefix("INT") {
        return match parse_bits(bits).ok_or_else(unknown)? {
            1 => Err(format!(
                "`{name}` is not a datatype (a 1-bit signed integer is BIPOLAR)"
            )),
            b => Ok(ElemType::Int(IntType::Signed(b))),
        };
    }
    if let Some(params) = name
        .strip_prefix("FIXED<")
        .and_then(|rest| rest.strip_suffix('>'))
    {
        return parse_fixed(params).ok_or_else(unknown);
    }
    Err(unknown())
}

/// A bit width of 1 to 64.
fn parse_bits(digits: &str) -> Option<u8> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u8>().ok().filter(|b| (1..=64).contains(b))
}

/// `FIXED<w,i>`: `w` bits in all, `i` of them before the binary point.
fn parse_fixed(params: &str) -> Option<ElemType> {
    let (total, int_bits) = params.split_once(',')?;
    let total = parse_bits(total.trim()).filter(|&w| w >= 2)?;
    let int_bits: i32 = int_bits
        .trim()
        .parse()
        .ok()
        .filter(|&i| (0..=i32::from(total)).contains(&i))?;
    let scale = 2f32.powi(int_bits - i32::from(total));
    Some(ElemType::Scaled(
        IntType::Signed(total),
        Scale::Tensor(scale),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_finn_datatype("BIPOLAR"), Ok(ElemType::BIPOLAR));
        assert_eq!(parse_finn_datatype("BINARY"), Ok(ElemType::BINARY));
        assert_eq!(parse_finn_datatype("UINT1"), Ok(ElemType::BINARY));
        assert_eq!(
            parse_finn_datatype("INT2"),
            Ok(ElemType::Int(IntType::Signed(2)))
        );
        assert_eq!(
            parse_finn_datatype("UINT8"),
            Ok(ElemType::Int(IntType::Unsigned(8)))
        );
        assert_eq!(
            parse_finn_datatype("INT32"),
            Ok(ElemType::Int(IntType::Signed(32)))
        );
        assert_eq!(
            parse_finn_datatype("TERNARY"),
            Ok(ElemType::Int(IntType::Signed(2)))
        );
        assert_eq!(parse_finn_datatype("FLOAT32"), Ok(ElemType::F32));
        assert_eq!(parse_finn_datatype("SCALEDINT8"), Ok(ElemType::F32));
        assert_eq!(
            parse_finn_datatype("FIXED<8,3>"),
            Ok(ElemType::Scaled(
                IntType::Signed(8),
                Scale::Tensor(1.0 / 32.0)
            ))
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "INT",
            "INT0",
            "INT1",
            "UINT65",
            "INT+3",
            "FIXED<8>",
            "FIXED<8,9>",
            "bipolar",
            "X",
        ] {
            assert!(parse_finn_datatype(bad).is_err(), "{bad}");
        }
    }
}
