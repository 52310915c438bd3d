//! The C ABI of a compiled model named `NAME`:
//!
//! ```c
//! size_t  NAME_input_len(void);   /* elements of one input sample  */
//! size_t  NAME_output_len(void);  /* float32 elements of one output sample */
//! int32_t NAME_input_type(void);  /* the input's element type, an InputType code */
//! int32_t NAME_run(const INPUT *input, size_t input_len, float *output, size_t output_len);
//! ```
//!
//! `INPUT` is `float` unless the model was built with `bnnc build --input-type` naming another
//! [`InputType`]; the library converts each element to the float32 it computes in, as ONNX's
//! Cast to float does. Libraries from before `NAME_input_type` existed take float32.
//!
//! `NAME_run` runs `input_len / NAME_input_len()` samples and returns [`RUN_OK`], or one of
//! the error codes below having written nothing. `NAME_input_len()` is never 0;
//! `NAME_output_len()` is 0 for a model whose result has no elements, and then `output_len`
//! must be 0 (and `output` may be null): such a model checks its input and writes nothing. It keeps no global mutable state: its only
//! memory is one scratch buffer per call, of a size fixed at compile time.

/// `NAME_run` succeeded.
pub const RUN_OK: i32 = 0;
/// `input_len` is not a positive multiple of `NAME_input_len()`.
pub const RUN_BAD_INPUT_LEN: i32 = 1;
/// `output_len` does not hold as many samples as `input_len`.
pub const RUN_BAD_OUTPUT_LEN: i32 = 2;
/// The scratch buffer could not be allocated.
pub const RUN_OUT_OF_MEMORY: i32 = 3;

/// The element type of a compiled model's input buffer: what `NAME_run` reads, and what
/// `NAME_input_type()` returns the [`code`](InputType::code) of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputType {
    F32,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    /// One byte per element, 0 for false and anything else for true (read as 1).
    Bool,
}

impl InputType {
    /// Every input type, in code order.
    pub const ALL: [InputType; 10] = [
        InputType::F32,
        InputType::U8,
        InputType::I8,
        InputType::U16,
        InputType::I16,
        InputType::U32,
        InputType::I32,
        InputType::U64,
        InputType::I64,
        InputType::Bool,
    ];

    /// The number `NAME_input_type()` returns for this type.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The type `NAME_input_type()` returned `code` for, if any.
    pub fn from_code(code: i32) -> Option<InputType> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The name `bnnc build --input-type` takes: numpy's and ONNX's (`float32`, `uint8`,
    /// `int64`, `bool`...).
    pub fn name(self) -> &'static str {
        match self {
            InputType::F32 => "float32",
            InputType::U8 => "uint8",
            InputType::I8 => "int8",
            InputType::U16 => "uint16",
            InputType::I16 => "int16",
            InputType::U32 => "uint32",
            InputType::I32 => "int32",
            InputType::U64 => "uint64",
            InputType::I64 => "int64",
            InputType::Bool => "bool",
        }
    }

    /// The type named `name` (see [`InputType::name`]).
    pub fn from_name(name: &str) -> Option<InputType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The C type of one element, as the header declares `input`.
    pub fn c_type(self) -> &'static str {
        match self {
            InputType::F32 => "float",
            InputType::U8 => "uint8_t",
            InputType::I8 => "int8_t",
            InputType::U16 => "uint16_t",
            InputType::I16 => "int16_t",
            InputType::U32 => "uint32_t",
            InputType::I32 => "int32_t",
            InputType::U64 => "uint64_t",
            InputType::I64 => "int64_t",
            InputType::Bool => "bool",
        }
    }

    /// Bytes of one element.
    pub fn bytes(self) -> usize {
        match self {
            InputType::U8 | InputType::I8 | InputType::Bool => 1,
            InputType::U16 | InputType::I16 => 2,
            InputType::F32 | InputType::U32 | InputType::I32 => 4,
            InputType::U64 | InputType::I64 => 8,
        }
    }

    /// The smallest and largest integer an element can hold; `None` for float32.
    pub fn range(self) -> Option<(i128, i128)> {
        let bits = |b: u32| (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1);
        let ubits = |b: u32| (0, (1i128 << b) - 1);
        Some(match self {
            InputType::F32 => return None,
            InputType::Bool => (0, 1),
            InputType::U8 => ubits(8),
            InputType::I8 => bits(8),
            InputType::U16 => ubits(16),
            InputType::I16 => bits(16),
            InputType::U32 => ubits(32),
            InputType::I32 => bits(32),
            InputType::U64 => ubits(64),
            InputType::I64 => bits(64),
        })
    }
}

impl std::fmt::Display for InputType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The symbol of an ABI function of model `name`, e.g. `symbol("cnv", "run")` is `cnv_run`.
pub fn symbol(name: &str, function: &str) -> String {
    format!("{name}_{function}")
}

/// What a non-zero return code of `NAME_run` means.
pub fn describe_code(code: i32) -> &'static str {
    match code {
        RUN_OK => "success",
        RUN_BAD_INPUT_LEN => "the input length is not a positive multiple of the sample size",
        RUN_BAD_OUTPUT_LEN => "the output length does not match the number of input samples",
        RUN_OUT_OF_MEMORY => "the scratch buffer could not be allocated",
        _ => "unknown error code",
    }
}

/// A model name made into a C identifier: characters other than ASCII letters, digits and `_`
/// become `_`, and a leading digit (or an empty name) gets a `_` in front.
pub fn c_identifier(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() || id.starts_with(|c: char| c.is_ascii_digit()) {
        id.insert(0, '_');
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_type_codes_and_names_round_trip() {
        for (i, t) in InputType::ALL.into_iter().enumerate() {
            assert_eq!(t.code(), i as i32);
            assert_eq!(InputType::from_code(t.code()), Some(t));
            assert_eq!(InputType::from_name(t.name()), Some(t));
        }
        assert_eq!(InputType::from_code(10), None);
        assert_eq!(InputType::from_name("float"), None);
        assert_eq!(InputType::I8.range(), Some((-128, 127)));
        assert_eq!(InputType::U64.range(), Some((0, u64::MAX.into())));
    }

    #[test]
    fn c_identifiers() {
        assert_eq!(c_identifier("cnv_w1a1"), "cnv_w1a1");
        assert_eq!(c_identifier("tfc-w2a2.qcdq"), "tfc_w2a2_qcdq");
        assert_eq!(c_identifier("2layer"), "_2layer");
        assert_eq!(c_identifier(""), "_");
        assert_eq!(c_identifier("modèle"), "mod_le");
    }
}
