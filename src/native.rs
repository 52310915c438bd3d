//! Models compiled for a CPU through the Cranelift backend (and the LLVM kernels), written as
//! a shared library and header, and loaded through the runtime crate: `bnnc build --emit
//! obj|so`, `bnnc run --backend native`, `bnnc bench` and Python's `bnnc.compile`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bnnc_cranelift::{Compiled, Cpu, Options, Triple};
use bnnc_ir::Graph;
use bnnc_runtime::Model;

use crate::Tuning;

/// The model name a file's stem gives: `cnv-w1a1.onnx` is `cnv_w1a1`.
pub fn default_name(model: &Path) -> String {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `model.onnx` in a folder of its own is named after the folder.
    let stem = if stem == "model" {
        model
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or(stem)
    } else {
        stem
    };
    bnnc_runtime::abi::c_identifier(&stem)
}

/// Backend options for a target and CPU as the command line names them.
pub fn options(target: &str, cpu: Option<&str>, name: String, tuning: &Tuning) -> Result<Options> {
    let triple = bnnc_cranelift::parse_target(target)?;
    let cpu = match cpu {
        Some(c) => c.parse::<Cpu>().map_err(anyhow::Error::msg)?,
        None if bnnc_cranelift::is_host(&triple) => Cpu::Native,
        None => Cpu::Generic,
    };
    Ok(Options {
        triple,
        cpu,
        name,
        input_type: bnnc_runtime::InputType::F32,
        profile: false,
        scalar_popcount: tuning.scalar_popcount,
        dump_clif: tuning.dump_clif.clone(),
    })
}

/// Which code generator compiles the XNOR and bit-serial kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Codegen {
    /// The fastest one built in: LLVM in a bnnc built with `--features llvm` (its kernels
    /// beat Cranelift's on every layer measured, BENCHMARKS.md), Cranelift otherwise.
    Auto,
    /// Cranelift, for everything (128-bit vectors).
    Cranelift,
    /// LLVM for the XNOR and bit-serial kernels (512-bit vectors under AVX-512), Cranelift
    /// for the rest; needs bnnc built with `--features llvm`.
    Llvm,
}

impl Codegen {
    /// The generator this build uses for `self`: `Auto` resolved.
    pub fn resolved(self) -> Codegen {
        match self {
            Codegen::Auto if cfg!(feature = "llvm") => Codegen::Llvm,
            Codegen::Auto => Codegen::Cranelift,
            c => c,
        }
    }

    /// What was used, in words, for messages.
    pub fn describe(self) -> &'static str {
        match self.resolved() {
            Codegen::Llvm => "LLVM kernels, Cranelift for the rest",
            _ => "Cranelift",
        }
    }
}

/// A compiled model: Cranelift's object, and the LLVM kernels' object if any.
pub struct Build {
    pub compiled: Compiled,
    pub kernels: Option<Vec<u8>>,
    /// How many of the LLVM kernels run XNOR or bit-serial layers on AMX tiles.
    pub on_tiles: usize,
}

/// Compiles a graph, naming the model in errors.
pub fn compile(graph: &Graph, options: &Options, codegen: Codegen) -> Result<Build> {
    let context = || format!("cannot compile {} for {}", options.name, options.triple);
    match codegen.resolved() {
        Codegen::Auto | Codegen::Cranelift => Ok(Build {
            compiled: bnnc_cranelift::compile(graph, options).with_context(context)?,
            kernels: None,
            on_tiles: 0,
        }),
        Codegen::Llvm => compile_llvm(graph, options).with_context(context),
    }
}

#[cfg(feature = "llvm")]
fn compile_llvm(graph: &Graph, options: &Options) -> Result<Build> {
    let cpu = match options.cpu {
        Cpu::Native => "native",
        Cpu::Generic if options.triple.architecture == bnnc_cranelift::Architecture::X86_64 => {
            "x86-64"
        }
        Cpu::Generic => "generic",
        Cpu::X86_64V2 => "x86-64-v2",
        Cpu::X86_64V3 => "x86-64-v3",
        Cpu::X86_64V4 => "x86-64-v4",
    };
    let mut kernels = bnnc_llvm::LlvmKernels::new(&options.triple.to_string(), cpu)
        .map_err(anyhow::Error::msg)?;
    let compiled = bnnc_cranelift::compile_with(graph, options, &mut kernels)?;
    if kernels.is_empty() {
        return Ok(Build {
            compiled,
            kernels: None,
            on_tiles: 0,
        });
    }
    let object = kernels.finish().map_err(anyhow::Error::msg)?;
    Ok(Build {
        compiled,
        kernels: Some(object.bytes),
        on_tiles: object.on_tiles,
    })
}

#[cfg(not(feature = "llvm"))]
fn compile_llvm(_: &Graph, _: &Options) -> Result<Build> {
    bail!("this bnnc was built without the LLVM backend: rebuild with `--features llvm` (needs LLVM 16)")
}

/// Writes the object (and, with `shared`, links the library) and the header; returns what
/// was written.
pub fn write(build: &Build, options: &Options, out: &Path, shared: bool) -> Result<Vec<PathBuf>> {
    let compiled = &build.compiled;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let header = dir.join(format!("{}.h", options.name));
    std::fs::write(&header, &compiled.header)
        .with_context(|| format!("cannot write {}", header.display()))?;
    if !shared {
        if build.kernels.is_some() {
            bail!("--emit obj with LLVM kernels would be two objects: use --emit so or --codegen cranelift");
        }
        std::fs::write(out, &compiled.object)
            .with_context(|| format!("cannot write {}", out.display()))?;
        return Ok(vec![out.to_path_buf(), header]);
    }
    let object = tempfile::Builder::new()
        .suffix(".o")
        .tempfile()
        .context("cannot create a temporary object file")?;
    std::fs::write(object.path(), &compiled.object).context("cannot write the object file")?;
    let cc =
        linker_for(&options.triple).with_context(|| format!("no linker for {}", options.triple))?;
    let kernels = match &build.kernels {
        Some(bytes) => {
            let file = tempfile::Builder::new()
                .suffix(".o")
                .tempfile()
                .context("cannot create a temporary object file")?;
            std::fs::write(file.path(), bytes).context("cannot write the kernels' object")?;
            Some(file)
        }
        None => None,
    };
    let mut objects = vec![object.path()];
    objects.extend(kernels.as_ref().map(|k| k.path()));
    bnnc_cranelift::link_shared_library_with(&cc, &objects, out)?;
    Ok(vec![out.to_path_buf(), header])
}

/// The C compiler driver that links shared libraries for `triple`: `$CC` or `cc` for this
/// machine; for aarch64 from another machine, `aarch64-linux-gnu-gcc` if it is installed.
/// `None` when there is none.
pub fn linker_for(triple: &Triple) -> Option<String> {
    if bnnc_cranelift::is_host(triple) {
        return Some(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    }
    let cross = match triple.architecture {
        bnnc_cranelift::Architecture::Aarch64(_) => "aarch64-linux-gnu-gcc",
        bnnc_cranelift::Architecture::X86_64 => "x86_64-linux-gnu-gcc",
        _ => return None,
    };
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(cross).is_file()));
    found.then(|| cross.to_string())
}

/// Links one object for this machine into a shared library with [`linker_for`]'s driver.
pub fn link_host_library(object: &Path, out: &Path) -> Result<()> {
    let cc = linker_for(&Triple::host()).context("no C compiler driver for this machine")?;
    bnnc_cranelift::link_shared_library_with(&cc, &[object], out)?;
    Ok(())
}

/// Whether this machine can link shared libraries for `triple`.
pub fn can_link(triple: &Triple) -> bool {
    linker_for(triple).is_some()
}

/// A model compiled for this machine, written as a shared library and header, and loaded.
pub struct Loaded {
    pub model: Model,
    /// The C header beside the library.
    pub header: PathBuf,
    /// The steps of the schedule (for profiles).
    pub steps: Vec<bnnc_cranelift::StepInfo>,
    /// How many layers run on AMX tiles ([`Build::on_tiles`]).
    pub on_tiles: usize,
    /// `NAME_profile`, when built with profiling.
    profile: Option<ProfileFn>,
    // Keeps the library mapped while `profile` may be called.
    _lib: Option<libloading::Library>,
    // Keeps the library's file until the model is dropped, when it was built in a temporary
    // folder.
    _dir: Option<tempfile::TempDir>,
}

type ProfileFn = unsafe extern "C" fn(*const f32, *mut f32, *mut u64) -> i32;

/// What to load: the model's name (the prefix of its symbols), its code generator, and where
/// to build it.
pub struct LoadOptions<'a> {
    pub name: String,
    pub codegen: Codegen,
    /// Also export `NAME_profile` (per-step times).
    pub profile: bool,
    /// The folder to build `libNAME.so` and `NAME.h` in; `None`: a temporary one, removed with
    /// the model.
    pub dir: Option<&'a Path>,
}

/// Compiles `graph` for this machine, builds its library and loads it.
pub fn load(graph: &Graph, tuning: &Tuning, load: LoadOptions<'_>) -> Result<Loaded> {
    let mut options = options(&Triple::host().to_string(), None, load.name, tuning)?;
    options.profile = load.profile;
    let build = compile(graph, &options, load.codegen)?;
    let (dir, temporary) = match load.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.to_path_buf(), None)
        }
        None => {
            let temporary = tempfile::tempdir().context("cannot create a temporary directory")?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let lib_path = dir.join(format!("lib{}.so", options.name));
    write(&build, &options, &lib_path, true)?;
    let model = Model::load(&lib_path, &options.name)?;
    let (lib, profile) = if load.profile {
        // SAFETY: the library was just built by bnnc; `NAME_profile` has the signature
        // `ProfileFn` (backends/cranelift/src/emit/mod.rs).
        let lib = unsafe { libloading::Library::new(&lib_path) }?;
        let symbol = format!("{}_profile", options.name);
        let f: ProfileFn = unsafe { *lib.get::<ProfileFn>(symbol.as_bytes())? };
        (Some(lib), Some(f))
    } else {
        (None, None)
    };
    Ok(Loaded {
        model,
        header: dir.join(format!("{}.h", options.name)),
        steps: build.compiled.steps,
        on_tiles: build.on_tiles,
        profile,
        _lib: lib,
        _dir: temporary,
    })
}

/// Median nanoseconds of every step over `runs` profiled runs of one sample.
pub fn profile_steps(loaded: &Loaded, runs: usize) -> Result<Vec<f64>> {
    let f = loaded
        .profile
        .context("internal: the library was built without profiling")?;
    let (il, ol) = (loaded.model.input_len(), loaded.model.output_len());
    let input: Vec<f32> = (0..il)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect();
    let mut out = vec![0f32; ol];
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(runs); loaded.steps.len()];
    for _ in 0..runs.max(1) {
        let mut times = vec![0u64; loaded.steps.len()];
        // SAFETY: input and output hold one sample; times has one entry per step.
        let code = unsafe { f(input.as_ptr(), out.as_mut_ptr(), times.as_mut_ptr()) };
        if code != 0 {
            bail!("the profiled run failed with code {code}");
        }
        for (s, t) in samples.iter_mut().zip(times) {
            s.push(t);
        }
    }
    Ok(samples
        .into_iter()
        .map(|mut s| {
            s.sort_unstable();
            s[s.len() / 2] as f64
        })
        .collect())
}

/// Latency and throughput of a compiled model.
pub struct BenchReport {
    pub latency: Duration,
    pub throughput_per_s: f64,
    pub batch: usize,
    pub threads: usize,
}

/// Times one sample `runs` times (median) and `batch` samples split over `threads`.
pub fn bench(model: &Model, batch: usize, threads: usize, runs: usize) -> Result<BenchReport> {
    let (il, ol) = (model.input_len(), model.output_len());
    // A deterministic input in [-1, 1): the timing of binary kernels does not depend on it.
    let input: Vec<f32> = (0..il * batch.max(1))
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect();
    let mut out = vec![0f32; ol];
    for _ in 0..runs.clamp(5, 50) {
        model.run(&input[..il], &mut out)?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        model.run(&input[..il], &mut out)?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let latency = times[times.len() / 2];

    let threads = threads.max(1);
    let batch = batch.max(1);
    let mut out = vec![0f32; batch * ol];
    // One timing runs the batch `reps` times, enough for about 5 ms, so that a small batch
    // is not lost in the timer's resolution (or, with threads, in spawning them).
    let once = |out: &mut [f32]| -> Result<Duration> {
        let t = Instant::now();
        if threads == 1 {
            model.run(&input, out)?;
        } else {
            model.run_parallel(&input, out, threads)?;
        }
        Ok(t.elapsed())
    };
    let reps = (Duration::from_millis(5).as_secs_f64() / once(&mut out)?.as_secs_f64().max(1e-9))
        .clamp(1.0, 10_000.0) as usize;
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            once(&mut out)?;
        }
        rates.push((batch * reps) as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    if latency.is_zero() {
        bail!("the timer did not advance");
    }
    Ok(BenchReport {
        latency,
        throughput_per_s: rates[rates.len() / 2],
        batch,
        threads,
    })
}
