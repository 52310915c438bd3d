//! `bnnc._bnnc`: the native half of the `bnnc` Python package. The Python half
//! (`python/bnnc/__init__.py`) takes paths, bytes and `onnx.ModelProto`s, checks arguments and
//! documents the API; this module runs bnnc's stages and loads compiled models.
//!
//! The GIL is released whenever bnnc computes (compiling, interpreting, running a compiled
//! model), so Python threads compile and run models in parallel.

use std::path::PathBuf;

use anyhow::Context;
use bnnc::native::{Codegen, LoadOptions, Loaded};
use bnnc::{fpga, inspect, native, stages, Tuning};
use bnnc_ir::{ElemType, Graph, Tensor, TensorData};
use bnnc_passes::FirstLastPolicy;
use bnnc_runtime::abi::c_identifier;
use numpy::{
    IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

create_exception!(
    _bnnc,
    CompileError,
    PyException,
    "A model bnnc cannot import, optimize or compile. `node`, `op` and `reason` say where and \
     why when the error is about one node (else `node` and `op` are None)."
);

/// A model as Python hands it over: a file's path, or the bytes of one.
#[derive(FromPyObject)]
enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    /// Imports the model (without the GIL).
    fn import(&self, py: Python<'_>) -> PyResult<Graph> {
        py.detach(|| match self {
            Source::Path(path) => stages::import(path),
            Source::Bytes(bytes) => stages::import_bytes(bytes, "the model's bytes"),
        })
        .map_err(compile_error)
    }

    /// What the model is called in messages, and the default name of its library.
    fn name(&self, graph: &Graph) -> String {
        match self {
            Source::Path(path) => native::default_name(path),
            Source::Bytes(_) => library_name(&graph.name),
        }
    }
}

/// A C identifier for a graph's name (`model` when it has none).
fn library_name(name: &str) -> String {
    if name.is_empty() {
        "model".into()
    } else {
        c_identifier(name)
    }
}

/// A [`CompileError`] from a stage's error, with the node, op and reason when it names one.
fn compile_error(error: anyhow::Error) -> PyErr {
    let message = format!("{error:#}");
    Python::attach(|py| {
        let located = bnnc::diagnostic::locate(&error);
        let exception = CompileError::new_err(message);
        let value = exception.value(py);
        let fields = [
            ("node", located.as_ref().map(|l| l.node.clone())),
            ("op", located.as_ref().map(|l| l.op.clone())),
            (
                "reason",
                Some(located.map_or_else(|| format!("{error:#}"), |l| l.reason)),
            ),
        ];
        for (field, text) in fields {
            if let Err(e) = value.setattr(field, text) {
                return e;
            }
        }
        exception
    })
}

fn first_last(policy: &str) -> PyResult<FirstLastPolicy> {
    match policy {
        "keep" => Ok(FirstLastPolicy::Keep),
        "int8" => Ok(FirstLastPolicy::Int8),
        other => Err(PyValueError::new_err(format!(
            "first_last must be \"keep\" or \"int8\", not {other:?}"
        ))),
    }
}

fn codegen(name: Option<&str>) -> PyResult<Codegen> {
    match name {
        None | Some("auto") => Ok(Codegen::Auto),
        Some("cranelift") => Ok(Codegen::Cranelift),
        Some("llvm") => Ok(Codegen::Llvm),
        Some(other) => Err(PyValueError::new_err(format!(
            "codegen must be \"auto\", \"cranelift\" or \"llvm\", not {other:?}"
        ))),
    }
}

/// Imports and optimizes a model (without the GIL).
fn optimized(
    py: Python<'_>,
    source: &Source,
    policy: FirstLastPolicy,
) -> PyResult<(Graph, String)> {
    let graph = source.import(py)?;
    let name = source.name(&graph);
    let graph = py
        .detach(|| stages::optimize(&name, graph, policy, &Tuning::default(), &mut |_| {}))
        .map_err(compile_error)?;
    Ok((graph, name))
}

/// The one input and one output a model must have to be called with an array.
fn single_io(graph: &Graph, name: &str) -> PyResult<(Vec<usize>, Vec<usize>, ElemType)> {
    if graph.inputs().len() != 1 || graph.outputs().len() != 1 {
        return Err(compile_error(anyhow::anyhow!(
            "{name}: bnnc runs models with one input and one output; this one has {} and {}",
            graph.inputs().len(),
            graph.outputs().len()
        )));
    }
    let input = graph.value(graph.inputs()[0]).ty.shape.clone();
    let output = &graph.value(graph.outputs()[0]).ty;
    Ok((input, output.shape.clone(), output.elem.clone()))
}

/// The samples of `x` for a model input of shape `input`, and the shape of their outputs (as
/// the interpreter shapes them), or a `ValueError`.
fn batch<'py>(
    x: &Bound<'py, PyAny>,
    input: &[usize],
    output: &[usize],
) -> PyResult<(usize, Vec<usize>, Bound<'py, PyArrayDyn<f32>>)> {
    let Ok(x) = x.cast::<PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!(
            "the input must be a numpy array of float32 (or integers), not {}",
            x.get_type().name()?
        )));
    };
    let dtype = x.dtype();
    // Integers and bools become float32 as ONNX's Cast to float makes them (numpy's astype
    // rounds to nearest too): what a model with an integer input computes first. Other
    // floats are refused rather than rounded behind the caller's back.
    let x = if matches!(dtype.kind(), b'i' | b'u' | b'b') {
        x.call_method1("astype", ("float32",))?
            .cast_into::<PyUntypedArray>()?
    } else if dtype.is_equiv_to(&numpy::dtype::<f32>(x.py())) {
        x.clone()
    } else {
        return Err(PyValueError::new_err(format!(
            "the input must be a float32 (or integer) array, not {dtype}: convert it with \
             x.astype(np.float32)"
        )));
    };
    let shape = x.shape();
    let Some(samples) = bnnc_ir::interp::batch_samples(input, shape) else {
        return Err(PyValueError::new_err(format!(
            "an input of shape {shape:?} does not fit the model's input {input:?}: give {input:?}, \
             or a batch (N, ...) of it"
        )));
    };
    let out_shape = if shape == input {
        output.to_vec()
    } else {
        bnnc_ir::interp::batch_output_shape(output, samples)
    };
    Ok((samples, out_shape, x.cast::<PyArrayDyn<f32>>()?.clone()))
}

/// A model compiled into a native shared library and loaded. Call it on a float32 batch.
#[pyclass(module = "bnnc", frozen)]
struct Model {
    loaded: Loaded,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
    output_elem: ElemType,
}

#[pymethods]
impl Model {
    /// Runs the model on `x`, a float32 array of the input's shape or a batch of it (any
    /// number of samples on the first axis), with the samples split over `threads` threads
    /// (0: one per core).
    #[pyo3(signature = (x, threads=1))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        threads: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (samples, out_shape, x) = batch(x, &self.input_shape, &self.output_shape)?;
        let x: PyReadonlyArrayDyn<'py, f32> = x.readonly();
        // The ABI takes samples in C order: other layouts (Fortran order, strides) are copied
        // into it. (`as_slice` alone would also take a Fortran-ordered array as it lies.)
        let copied;
        let input = match x.as_slice() {
            Ok(slice) if x.is_c_contiguous() => slice,
            _ => {
                copied = x.as_array().iter().copied().collect::<Vec<f32>>();
                &copied
            }
        };
        let model = &self.loaded.model;
        let mut output = vec![0f32; samples * model.output_len()];
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        if samples > 0 {
            py.detach(|| model.run_parallel(input, &mut output, threads))
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
        if self.output_elem == ElemType::I64 {
            let indices: Vec<i64> = output.iter().map(|&v| v as i64).collect();
            Ok(indices.into_pyarray(py).reshape(out_shape)?.into_any())
        } else {
            Ok(output.into_pyarray(py).reshape(out_shape)?.into_any())
        }
    }

    /// The shape of one input sample, as the model declares it.
    #[getter]
    fn input_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.input_shape)
    }

    /// The shape of one output sample, as the model declares it.
    #[getter]
    fn output_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.output_shape)
    }

    /// The model's name: the prefix of the library's symbols (`NAME_run`).
    #[getter]
    fn name(&self) -> &str {
        self.loaded.model.name()
    }

    /// The shared library the model runs from.
    #[getter]
    fn library_path(&self) -> PathBuf {
        self.loaded.model.path().to_path_buf()
    }

    /// The C header beside the library.
    #[getter]
    fn header_path(&self) -> PathBuf {
        self.loaded.header.clone()
    }

    /// Copies the library and its header into the folder `dir` (created if need be); returns
    /// the paths written.
    fn save(&self, dir: PathBuf) -> PyResult<Vec<PathBuf>> {
        let save = || -> anyhow::Result<Vec<PathBuf>> {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut written = Vec::new();
            for from in [self.loaded.model.path(), self.loaded.header.as_path()] {
                let to = dir.join(from.file_name().context("a library without a file name")?);
                if to != from {
                    std::fs::copy(from, &to)
                        .with_context(|| format!("cannot write {}", to.display()))?;
                }
                written.push(to);
            }
            Ok(written)
        };
        save().map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{e:#}")))
    }

    fn __repr__(&self) -> String {
        format!(
            "<bnnc.Model {} {:?} -> {:?} at {}>",
            self.loaded.model.name(),
            self.input_shape,
            self.output_shape,
            self.loaded.model.path().display()
        )
    }
}

/// Compiles a model for this machine and loads it (see `bnnc.compile`).
#[pyfunction]
#[pyo3(signature = (model, *, codegen=None, first_last="keep", name=None, out_dir=None))]
fn compile(
    py: Python<'_>,
    model: Source,
    codegen: Option<&str>,
    first_last: &str,
    name: Option<String>,
    out_dir: Option<PathBuf>,
) -> PyResult<Model> {
    let codegen = self::codegen(codegen)?;
    let (graph, default_name) = optimized(py, &model, self::first_last(first_last)?)?;
    let name = name.unwrap_or(default_name);
    if c_identifier(&name) != name {
        return Err(PyValueError::new_err(format!(
            "name {name:?} is not a C identifier (try {:?})",
            c_identifier(&name)
        )));
    }
    let (input_shape, output_shape, output_elem) = single_io(&graph, &name)?;
    let loaded = py
        .detach(|| {
            native::load(
                &graph,
                &Tuning::default(),
                LoadOptions {
                    name,
                    codegen,
                    profile: false,
                    dir: out_dir.as_deref(),
                },
            )
        })
        .map_err(compile_error)?;
    Ok(Model {
        loaded,
        input_shape,
        output_shape,
        output_elem,
    })
}

/// Runs a model with the reference interpreter (see `bnnc.run`).
#[pyfunction]
#[pyo3(signature = (model, x, *, passes=true, first_last="keep"))]
fn run<'py>(
    py: Python<'py>,
    model: Source,
    x: &Bound<'py, PyAny>,
    passes: bool,
    first_last: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let policy = self::first_last(first_last)?;
    let (graph, name) = if passes {
        optimized(py, &model, policy)?
    } else {
        let graph = model.import(py)?;
        let name = model.name(&graph);
        (graph, name)
    };
    let (input, output, _) = single_io(&graph, &name)?;
    let (_, _, x) = batch(x, &input, &output)?;
    let x: PyReadonlyArrayDyn<'py, f32> = x.readonly();
    let tensor = Tensor::f32(x.shape().to_vec(), x.as_array().iter().copied().collect());
    let mut results = py
        .detach(|| bnnc_ir::interp::run_batch(&graph, &tensor))
        .context("running the interpreter")
        .map_err(compile_error)?;
    let y = results.swap_remove(0);
    let shape = y.shape().to_vec();
    Ok(match y.data() {
        TensorData::F32(v) => v.clone().into_pyarray(py).reshape(shape)?.into_any(),
        TensorData::I64(v) => v.clone().into_pyarray(py).reshape(shape)?.into_any(),
    })
}

/// What `bnnc inspect --json` prints, as JSON text (see `bnnc.inspect`).
#[pyfunction]
#[pyo3(signature = (model, *, passes=true, first_last="keep"))]
fn inspect_json(py: Python<'_>, model: Source, passes: bool, first_last: &str) -> PyResult<String> {
    let graph = if passes {
        optimized(py, &model, self::first_last(first_last)?)?.0
    } else {
        model.import(py)?
    };
    Ok(inspect::json_report(&graph).to_string())
}

/// Writes an FPGA project (see `bnnc.build_hls` and `bnnc.build_verilog`); returns its
/// report as JSON text.
#[pyfunction]
#[pyo3(signature = (model, out_dir, backend, *, part, clock_ns, fps, folding, tb_input, tb_expected, ap_types, name, first_last))]
#[allow(clippy::too_many_arguments)]
fn build_fpga(
    py: Python<'_>,
    model: Source,
    out_dir: PathBuf,
    backend: &str,
    part: String,
    clock_ns: f64,
    fps: Option<f64>,
    folding: Option<PathBuf>,
    tb_input: Option<PathBuf>,
    tb_expected: Option<PathBuf>,
    ap_types: Option<PathBuf>,
    name: Option<String>,
    first_last: &str,
) -> PyResult<String> {
    let backend = match backend {
        "hls" => fpga::FpgaBackend::Hls,
        "verilog" => fpga::FpgaBackend::Verilog,
        other => return Err(PyValueError::new_err(format!("no FPGA backend {other:?}"))),
    };
    let (graph, default_name) = optimized(py, &model, self::first_last(first_last)?)?;
    let name = c_identifier(&name.unwrap_or(default_name));
    let args = fpga::FpgaArgs {
        part,
        clock_ns,
        fps,
        folding,
    };
    let testbench = fpga::TestbenchArgs {
        tb_input,
        tb_expected,
        ap_types,
    };
    py.detach(|| -> anyhow::Result<String> {
        let (plan, report) = fpga::plan(&graph, &name, &args)?;
        let vectors = fpga::test_vectors(&graph, &testbench)?;
        fpga::write_project(backend, &plan, &report, &vectors, &out_dir, &testbench)?;
        Ok(report.json().to_string())
    })
    .map_err(compile_error)
}

/// Whether this build of the module has the LLVM code generator.
#[pyfunction]
fn has_llvm() -> bool {
    cfg!(feature = "llvm")
}

#[pymodule]
fn _bnnc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CompileError", m.py().get_type::<CompileError>())?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_json, m)?)?;
    m.add_function(wrap_pyfunction!(build_fpga, m)?)?;
    m.add_function(wrap_pyfunction!(has_llvm, m)?)?;
    Ok(())
}
