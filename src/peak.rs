//! `bnnc bench --peak`: this machine's XNOR-popcount peak, `sum(popcount(a ^ b))` over two
//! 4 KiB arrays in L1, through the loops Cranelift emits ([`bnnc_cranelift::peak_object`]),
//! against a hand-written AVX-512 VPOPCNTDQ loop (where the CPU has it) and plain Rust.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use bnnc_cranelift::{Cpu, Options, Triple};

/// Words per array: 4 KiB, in L1.
const WORDS: usize = 512;

/// One loop's throughput in binary multiply-accumulates per second.
pub struct Peak {
    pub name: &'static str,
    pub gmacs: f64,
}

type Kernel = unsafe extern "C" fn(*const u64, *const u64, usize) -> u64;

/// Median time of one call over repeated batches, as binary MACs per second.
fn measure(f: &dyn Fn() -> u64) -> f64 {
    const CALLS: usize = 2000;
    let mut rates: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            let mut sink = 0u64;
            for _ in 0..CALLS {
                sink = sink.wrapping_add(std::hint::black_box(f()));
            }
            std::hint::black_box(sink);
            (CALLS * WORDS * 64) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Measures every loop, checking that each gives the same count.
pub fn measure_all() -> Result<Vec<Peak>> {
    // Deterministic pseudo-random words.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let a: Vec<u64> = (0..WORDS).map(|_| next()).collect();
    let b: Vec<u64> = (0..WORDS).map(|_| next()).collect();
    let want: u64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| u64::from((x ^ y).count_ones()))
        .sum();

    let options = Options {
        triple: Triple::host(),
        cpu: Cpu::Native,
        name: "bnnc_peak".into(),
        input_type: bnnc_runtime::InputType::F32,
        profile: false,
        scalar_popcount: false,
        dump_clif: None,
    };
    let object = bnnc_cranelift::peak_object(&options)?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let obj = dir.path().join("peak.o");
    let lib_path = dir.path().join("libpeak.so");
    std::fs::write(&obj, object)?;
    bnnc::native::link_host_library(&obj, &lib_path)?;
    // SAFETY: the library was just built from bnnc's peak object; loading it runs no
    // initialisers of ours.
    let lib = unsafe { libloading::Library::new(&lib_path) }?;
    let mut peaks = Vec::new();
    for (symbol, name) in [
        (&b"bnnc_xor_popcount_scalar"[..], "cranelift scalar popcnt"),
        (&b"bnnc_xor_popcount_vector"[..], "cranelift popcnt.i8x16"),
    ] {
        // SAFETY: both symbols have the signature `Kernel` (peak.rs in the backend).
        let f: Kernel = unsafe { *lib.get::<Kernel>(symbol)? };
        // SAFETY: a and b hold WORDS words each.
        let run = || unsafe { f(a.as_ptr(), b.as_ptr(), WORDS) };
        if run() != want {
            bail!("{name} counted {} bits, expected {want}", run());
        }
        peaks.push(Peak {
            name,
            gmacs: measure(&run),
        });
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vpopcntdq")
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: the features the function needs were detected just above.
        let run = || unsafe { avx512::xor_popcount(&a, &b) };
        if run() != want {
            bail!(
                "the AVX-512 reference counted {} bits, expected {want}",
                run()
            );
        }
        peaks.push(Peak {
            name: "std::arch AVX-512 VPOPCNTQ",
            gmacs: measure(&run),
        });
    }
    let portable = || {
        std::hint::black_box(&a)
            .iter()
            .zip(std::hint::black_box(&b))
            .map(|(x, y)| u64::from((x ^ y).count_ones()))
            .sum::<u64>()
    };
    peaks.push(Peak {
        name: "Rust count_ones (baseline x86-64)",
        gmacs: measure(&portable),
    });
    Ok(peaks)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// `sum(popcount(a ^ b))`, 512 bits at a time in four chains (`a.len()` a multiple of
    /// 32 words).
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub unsafe fn xor_popcount(a: &[u64], b: &[u64]) -> u64 {
        let step = |acc: __m512i, x: &[u64], y: &[u64]| {
            // SAFETY: x and y hold 8 u64 (64 bytes); unaligned loads allow any address.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_si512(x.as_ptr().cast()),
                    _mm512_loadu_si512(y.as_ptr().cast()),
                )
            };
            _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(x, y)))
        };
        let (mut s0, mut s1, mut s2, mut s3) = (
            _mm512_setzero_si512(),
            _mm512_setzero_si512(),
            _mm512_setzero_si512(),
            _mm512_setzero_si512(),
        );
        for (x, y) in a.chunks_exact(32).zip(b.chunks_exact(32)) {
            s0 = step(s0, &x[0..8], &y[0..8]);
            s1 = step(s1, &x[8..16], &y[8..16]);
            s2 = step(s2, &x[16..24], &y[16..24]);
            s3 = step(s3, &x[24..32], &y[24..32]);
        }
        let s = _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3));
        _mm512_reduce_add_epi64(s) as u64
    }
}
