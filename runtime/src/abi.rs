//! The C ABI of a compiled model named `NAME`:
//!
//! ```c
//! size_t  NAME_input_len(void);   /* float32 elements of one input sample  */
//! size_t  NAME_output_len(void);  /* float32 elements of one output sample */
//! int32_t NAME_run(const float *input, size_t input_len, float *output, size_t output_len);
//! ```
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
    fn c_identifiers() {
        assert_eq!(c_identifier("cnv_w1a1"), "cnv_w1a1");
        assert_eq!(c_identifier("tfc-w2a2.qcdq"), "tfc_w2a2_qcdq");
        assert_eq!(c_identifier("2layer"), "_2layer");
        assert_eq!(c_identifier(""), "_");
        assert_eq!(c_identifier("modèle"), "mod_le");
    }
}
