//! Loading and running a model compiled by bnnc: a shared library exporting the C ABI of
//! [`crate::abi`] for one model name.
//!
//! ```no_run
//! use bnnc_runtime::Model;
//! # fn main() -> Result<(), bnnc_runtime::RuntimeError> {
//! let model = Model::load_default("libcnv_w1a1.so".as_ref())?;
//! let input = vec![0.0f32; model.input_len()];
//! let output = model.run_batch(&input)?;
//! assert_eq!(output.len(), model.output_len());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use libloading::Library;

use crate::abi::{self, InputType};

/// `size_t NAME_input_len(void)` and `size_t NAME_output_len(void)`.
type LenFn = unsafe extern "C" fn() -> usize;
/// `int32_t NAME_input_type(void)`.
type InputTypeFn = unsafe extern "C" fn() -> i32;
/// `int32_t NAME_run(const INPUT *input, size_t input_len, float *output, size_t output_len)`,
/// the input pointer untyped here: [`InputElement`] checks its type against the library's.
type RunFn = unsafe extern "C" fn(*const u8, usize, *mut f32, usize) -> i32;

/// An element type a compiled model's input can have: the Rust twin of an [`InputType`].
/// Sealed: the implementations are exactly the ABI's types.
pub trait InputElement: Copy + Send + Sync + sealed::Sealed {
    /// The ABI type this Rust type is.
    const TYPE: InputType;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! input_elements {
    ($($t:ty => $v:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl InputElement for $t {
            const TYPE: InputType = InputType::$v;
        }
    )*};
}

input_elements!(f32 => F32, u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32,
    i32 => I32, u64 => U64, i64 => I64, bool => Bool);

/// What can go wrong loading or running a compiled model. Every message names the library or
/// the model and the lengths involved, so that it can be acted on without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The dynamic loader could not open the library (missing file, wrong architecture,
    /// unresolved dependencies...).
    #[error("cannot load compiled model {}: {source}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: libloading::Error,
    },
    /// A model name that cannot be part of a C symbol: symbols are `NAME_run` etc., so the
    /// name must already be a C identifier (see [`abi::c_identifier`]).
    #[error("`{name}` is not a C identifier, so no compiled model can be named that (did you mean `{suggestion}`?)")]
    InvalidName { name: String, suggestion: String },
    /// [`Model::load_default`] was given a path without a file name to derive the model's
    /// name from.
    #[error("cannot derive a model name from {}: it has no file name", path.display())]
    NoFileName { path: PathBuf },
    /// The library does not export the ABI for this name: usually it was built with another
    /// `--name`, or it is not a bnnc model at all.
    #[error(
        "{} was not built for model `{name}`: missing symbol{} {} (was it built with `bnnc build --name {name}`?)",
        path.display(),
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", ")
    )]
    MissingSymbols {
        path: PathBuf,
        name: String,
        missing: Vec<String>,
    },
    /// `NAME_input_len()` returned 0, which no model can mean: an input sample of no elements
    /// would make every batch length ambiguous. (An output sample may be empty: a model whose
    /// result has no elements writes nothing.)
    #[error("model `{name}` in {} reports {function}() = 0; a compiled model has non-empty input samples", path.display())]
    ZeroLength {
        path: PathBuf,
        name: String,
        function: String,
    },
    /// `NAME_input_type()` returned a code no [`InputType`] has (a library from a newer
    /// bnnc, or not a bnnc model).
    #[error("model `{name}` in {} reports input type code {code}, which this runtime does not know", path.display())]
    UnknownInputType {
        path: PathBuf,
        name: String,
        code: i32,
    },
    /// The input buffer's element type is not the one the library was built for
    /// (`bnnc build --input-type`).
    #[error(
        "model `{name}` takes {expected} input elements (built with --input-type {expected}), \
         not {actual}"
    )]
    InputType {
        name: String,
        expected: InputType,
        actual: InputType,
    },
    /// The input is empty or not a whole number of samples.
    #[error(
        "model `{name}`: the input has {actual} elements, \
         expected a positive multiple of the input length {input_len}"
    )]
    InputLength {
        name: String,
        input_len: usize,
        actual: usize,
    },
    /// The output buffer does not hold exactly as many samples as the input.
    #[error(
        "model `{name}`: the output has {actual} float32 elements, expected {expected} \
         ({samples} sample(s) of output length {output_len})"
    )]
    OutputLength {
        name: String,
        samples: usize,
        output_len: usize,
        expected: usize,
        actual: usize,
    },
    /// The output of the batch would have more elements than `usize` can count.
    #[error(
        "model `{name}`: {samples} samples of output length {output_len} overflow the address space"
    )]
    OutputTooLarge {
        name: String,
        samples: usize,
        output_len: usize,
    },
    /// `NAME_run` returned a non-zero code. With the lengths checked before the call this
    /// means the model itself failed (e.g. out of memory) or disagrees with its own lengths.
    #[error("model `{name}`: {name}_run returned error code {code}: {}", abi::describe_code(*code))]
    Run { name: String, code: i32 },
}

/// A compiled model, loaded from its shared library.
///
/// `Model` is `Send + Sync`: the ABI is reentrant (no global mutable state, one scratch buffer
/// per call), so one loaded model can serve any number of threads at once.
pub struct Model {
    name: String,
    path: PathBuf,
    input_len: usize,
    output_len: usize,
    input_type: InputType,
    run_fn: RunFn,
    /// Keeps the library mapped for as long as `run_fn` may be called. Never read, but it must
    /// outlive the function pointer above, which it does since both live and die with `self`.
    _library: Library,
}

// Compile-time check that the promise in the doc comment holds: a field that is not
// `Send + Sync` would make this fail to build rather than silently drop the guarantee.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
};

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("input_len", &self.input_len)
            .field("output_len", &self.output_len)
            .field("input_type", &self.input_type)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads the library at `path` and resolves the ABI of model `name` (`name_input_len`,
    /// `name_output_len`, `name_run`). The lengths are read once here and cached.
    ///
    /// A relative path is taken relative to the current directory, never searched for in the
    /// loader's library path, so that `libfoo.so` means the file here.
    pub fn load(path: &Path, name: &str) -> Result<Model, RuntimeError> {
        let suggestion = abi::c_identifier(name);
        if suggestion != name {
            return Err(RuntimeError::InvalidName {
                name: name.to_owned(),
                suggestion,
            });
        }
        // dlopen searches LD_LIBRARY_PATH and the system directories for a name without a
        // slash; a leading "./" makes it open exactly the file the caller named.
        let open_path = if path.is_relative() {
            Path::new(".").join(path)
        } else {
            path.to_owned()
        };
        // SAFETY: loading a library runs its initializers. Libraries generated by bnnc have
        // none beyond the C runtime's; loading an arbitrary library is the caller's choice, as
        // with any plugin, and is what this function is documented to do.
        let library = unsafe { Library::new(&open_path) }.map_err(|source| RuntimeError::Load {
            path: path.to_owned(),
            source,
        })?;

        let input_symbol = abi::symbol(name, "input_len");
        let output_symbol = abi::symbol(name, "output_len");
        let run_symbol = abi::symbol(name, "run");
        // SAFETY (all three `get`s): the types are those of the ABI in `abi`, which every
        // library exporting these names for a bnnc model implements. The symbols are copied
        // out as plain function pointers; they stay valid because `library` is stored in the
        // returned `Model` beside them and never unloaded before it is dropped.
        let input_len_fn = unsafe { library.get::<LenFn>(input_symbol.as_bytes()) }.map(|s| *s);
        let output_len_fn = unsafe { library.get::<LenFn>(output_symbol.as_bytes()) }.map(|s| *s);
        let run_fn = unsafe { library.get::<RunFn>(run_symbol.as_bytes()) }.map(|s| *s);

        // Report every missing symbol at once: all three missing means "another model", one
        // missing means a broken or foreign library, and the difference helps.
        let (input_len_fn, output_len_fn, run_fn) = match (input_len_fn, output_len_fn, run_fn) {
            (Ok(i), Ok(o), Ok(r)) => (i, o, r),
            (i, o, r) => {
                let missing = [
                    (i.is_err(), input_symbol),
                    (o.is_err(), output_symbol),
                    (r.is_err(), run_symbol),
                ]
                .into_iter()
                .filter(|(is_missing, _)| *is_missing)
                .map(|(_, symbol)| symbol)
                .collect();
                return Err(RuntimeError::MissingSymbols {
                    path: path.to_owned(),
                    name: name.to_owned(),
                    missing,
                });
            }
        };

        // SAFETY: both functions take no arguments and, per the ABI, only return a constant.
        let (input_len, output_len) = unsafe { (input_len_fn(), output_len_fn()) };
        if input_len == 0 {
            return Err(RuntimeError::ZeroLength {
                path: path.to_owned(),
                name: name.to_owned(),
                function: abi::symbol(name, "input_len"),
            });
        }
        // Libraries built before `NAME_input_type` existed take float32.
        let type_symbol = abi::symbol(name, "input_type");
        // SAFETY: as above: the ABI's type for this symbol, a constant function.
        let input_type = match unsafe { library.get::<InputTypeFn>(type_symbol.as_bytes()) } {
            Err(_) => InputType::F32,
            Ok(f) => {
                let code = unsafe { f() };
                InputType::from_code(code).ok_or_else(|| RuntimeError::UnknownInputType {
                    path: path.to_owned(),
                    name: name.to_owned(),
                    code,
                })?
            }
        };

        Ok(Model {
            name: name.to_owned(),
            path: path.to_owned(),
            input_len,
            output_len,
            input_type,
            run_fn,
            _library: library,
        })
    }

    /// Loads the library at `path` for the model named after the file: the file stem without
    /// a leading `lib`, made a C identifier, as `bnnc build` names its outputs
    /// (`libcnv_w1a1.so` → `cnv_w1a1`).
    pub fn load_default(path: &Path) -> Result<Model, RuntimeError> {
        let stem = path
            .file_stem()
            .ok_or_else(|| RuntimeError::NoFileName {
                path: path.to_owned(),
            })?
            .to_string_lossy();
        let stem = stem.strip_prefix("lib").unwrap_or(&stem);
        Model::load(path, &abi::c_identifier(stem))
    }

    /// The model's name, the prefix of its symbols.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The library the model was loaded from, as given to [`Model::load`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The element type of the input buffer (float32 unless built with `--input-type`).
    pub fn input_type(&self) -> InputType {
        self.input_type
    }

    /// Elements of one input sample (never 0).
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// float32 elements of one output sample (0 for a model whose result is empty: its
    /// output buffers are then empty too).
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// The number of samples in `input_len` elements of input, or the error saying why that
    /// is not a batch.
    pub fn samples(&self, input_len: usize) -> Result<usize, RuntimeError> {
        if input_len == 0 || !input_len.is_multiple_of(self.input_len) {
            return Err(RuntimeError::InputLength {
                name: self.name.clone(),
                input_len: self.input_len,
                actual: input_len,
            });
        }
        Ok(input_len / self.input_len)
    }

    /// Output elements for `samples` samples, or the error if that overflows.
    fn batch_output_len(&self, samples: usize) -> Result<usize, RuntimeError> {
        samples
            .checked_mul(self.output_len)
            .ok_or_else(|| RuntimeError::OutputTooLarge {
                name: self.name.clone(),
                samples,
                output_len: self.output_len,
            })
    }

    /// Whether an output of `actual` elements holds exactly `samples` samples.
    fn check_output(&self, samples: usize, actual: usize) -> Result<(), RuntimeError> {
        let expected = self.batch_output_len(samples)?;
        if actual != expected {
            return Err(RuntimeError::OutputLength {
                name: self.name.clone(),
                samples,
                output_len: self.output_len,
                expected,
                actual,
            });
        }
        Ok(())
    }

    /// Runs `input.len() / input_len()` samples into `output`, which must hold exactly as many
    /// samples. The lengths and the input's element type are checked here, before the call,
    /// so that the error can name them; the library checks the lengths again.
    pub fn run<T: InputElement>(
        &self,
        input: &[T],
        output: &mut [f32],
    ) -> Result<(), RuntimeError> {
        if T::TYPE != self.input_type {
            return Err(RuntimeError::InputType {
                name: self.name.clone(),
                expected: self.input_type,
                actual: T::TYPE,
            });
        }
        let samples = self.samples(input.len())?;
        self.check_output(samples, output.len())?;
        // SAFETY: `run_fn` has the ABI's signature (see `load`), its input elements are `T`'s
        // (checked above), and the library is still loaded (owned by `self`). The pointers
        // come from live slices of exactly the lengths passed, which the function reads
        // (input) and writes (output) within; `output` is borrowed mutably, so nothing else
        // reads it meanwhile. The ABI is reentrant, so concurrent calls through `&self` from
        // several threads are allowed.
        let code = unsafe {
            (self.run_fn)(
                input.as_ptr().cast(),
                input.len(),
                output.as_mut_ptr(),
                output.len(),
            )
        };
        if code != abi::RUN_OK {
            return Err(RuntimeError::Run {
                name: self.name.clone(),
                code,
            });
        }
        Ok(())
    }

    /// [`Model::run`] with the samples split over up to `threads` threads, each running a
    /// contiguous share of them: the same outputs (samples are independent and the ABI is
    /// reentrant), sooner on several cores.
    pub fn run_parallel<T: InputElement>(
        &self,
        input: &[T],
        output: &mut [f32],
        threads: usize,
    ) -> Result<(), RuntimeError> {
        let samples = self.samples(input.len())?;
        let threads = threads.clamp(1, samples);
        // An empty output cannot be split into shares (nor is there work to share).
        if threads == 1 || self.output_len == 0 {
            return self.run(input, output);
        }
        // The lengths as `run` checks them, before any thread starts.
        self.check_output(samples, output.len())?;
        let share = samples.div_ceil(threads);
        std::thread::scope(|scope| {
            let runs: Vec<_> = input
                .chunks(share * self.input_len)
                .zip(output.chunks_mut(share * self.output_len))
                .map(|(input, output)| scope.spawn(move || self.run(input, output)))
                .collect();
            // The scope joins every thread; the first error (in sample order) is returned.
            runs.into_iter().try_for_each(|run| {
                run.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        })
    }

    /// Runs `input.len() / input_len()` samples and returns their outputs, `output_len()`
    /// elements per sample, in order.
    pub fn run_batch<T: InputElement>(&self, input: &[T]) -> Result<Vec<f32>, RuntimeError> {
        let samples = self.samples(input.len())?;
        let mut output = vec![0.0; self.batch_output_len(samples)?];
        self.run(input, &mut output)?;
        Ok(output)
    }

    /// Runs an array of any shape whose element count is a positive multiple of
    /// `input_len()` (e.g. `[samples, C, H, W]`), in row-major order, and returns the outputs
    /// with shape `[samples, output_len()]`. A view that is not in standard layout is copied
    /// first, since the ABI takes one contiguous row-major buffer.
    #[cfg(feature = "ndarray")]
    pub fn run_array<T: InputElement>(
        &self,
        input: ndarray::ArrayViewD<'_, T>,
    ) -> Result<ndarray::ArrayD<f32>, RuntimeError> {
        let input = input.as_standard_layout();
        let data = input
            .as_slice()
            .expect("an array in standard layout is one contiguous slice");
        let samples = self.samples(data.len())?;
        let output = self.run_batch(data)?;
        let output = ndarray::Array2::from_shape_vec((samples, self.output_len), output)
            .expect("run_batch returns samples * output_len elements");
        Ok(output.into_dyn())
    }
}
