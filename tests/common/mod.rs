//! What the command-line tests share: the bundled data, running `bnnc` and other tools, and
//! running aarch64 libraries under qemu.
// Each test binary uses some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A file or folder under tests/data.
pub fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// Runs the `bnnc` binary under test.
pub fn bnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bnnc"))
        .args(args)
        .output()
        .expect("bnnc runs")
}

/// Runs a command; its standard output and error, or why it failed with them.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("{cmd:?} failed:\n{text}"));
    }
    Ok(text)
}

/// A C program that runs a compiled library on raw samples of its input type:
/// `driver LIB NAME IN OUT.f32`.
const AARCH64_DRIVER: &str = r#"
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *sym(void *lib, const char *name, const char *function) {
    char s[256];
    snprintf(s, sizeof s, "%s_%s", name, function);
    void *f = dlsym(lib, s);
    if (!f) { fprintf(stderr, "no symbol %s\n", s); exit(2); }
    return f;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: driver LIB NAME IN OUT\n"); return 2; }
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 2; }
    size_t (*input_len)(void) = (size_t (*)(void))sym(lib, argv[2], "input_len");
    size_t (*output_len)(void) = (size_t (*)(void))sym(lib, argv[2], "output_len");
    int32_t (*input_type)(void) = (int32_t (*)(void))sym(lib, argv[2], "input_type");
    int32_t (*run)(const void *, size_t, float *, size_t) =
        (int32_t (*)(const void *, size_t, float *, size_t))sym(lib, argv[2], "run");
    /* Bytes per element of each input type code (bnnc_runtime::abi::InputType). */
    static const size_t bytes[] = {4, 1, 1, 2, 2, 4, 4, 8, 8, 1};
    int32_t type = input_type();
    if (type < 0 || type > 9) { fprintf(stderr, "input type %d\n", (int)type); return 2; }
    size_t size = bytes[type];
    FILE *f = fopen(argv[3], "rb");
    if (!f) { perror(argv[3]); return 2; }
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f) / size;
    fseek(f, 0, SEEK_SET);
    void *in = malloc(n * size);
    if (fread(in, size, n, f) != n) { perror("read"); return 2; }
    fclose(f);
    size_t m = n / input_len() * output_len();
    float *out = malloc(m * sizeof(float));
    int32_t code = run(in, n, out, m);
    if (code != 0) { fprintf(stderr, "run: code %d\n", (int)code); return 3; }
    f = fopen(argv[4], "wb");
    fwrite(out, sizeof(float), m, f);
    fclose(f);
    return 0;
}
"#;

/// [`AARCH64_DRIVER`] built for aarch64: runs aarch64 libraries under `qemu-aarch64`. Needs
/// `aarch64-linux-gnu-gcc` and `qemu-aarch64` (Debian: gcc-aarch64-linux-gnu,
/// libc6-dev-arm64-cross, qemu-user; `scripts/test` installs them), and panics without them.
pub struct AarchDriver {
    exe: PathBuf,
}

impl AarchDriver {
    /// Compiles the driver into `dir`.
    pub fn build(dir: &Path) -> AarchDriver {
        for tool in ["aarch64-linux-gnu-gcc", "qemu-aarch64"] {
            let found = Command::new(tool).arg("--version").output().is_ok();
            assert!(
                found,
                "{tool} is needed (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
            );
        }
        let source = dir.join("driver.c");
        std::fs::write(&source, AARCH64_DRIVER).unwrap();
        let exe = dir.join("driver");
        run(Command::new("aarch64-linux-gnu-gcc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(&source)
            .arg("-ldl"))
        .unwrap();
        AarchDriver { exe }
    }

    /// Runs model `name` of the aarch64 library `lib` on `input`, raw elements of its input
    /// type; its float32 outputs, or why it failed.
    pub fn run(&self, lib: &Path, name: &str, input: &[u8]) -> Result<Vec<f32>, String> {
        let dir = self.exe.parent().expect("the driver is in a folder");
        let (in_path, out_path) = (dir.join("in.raw"), dir.join("out.f32"));
        std::fs::write(&in_path, input).map_err(|e| e.to_string())?;
        run(Command::new("qemu-aarch64")
            .args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(&self.exe)
            .args([lib, Path::new(name), &in_path, &out_path]))?;
        let bytes = std::fs::read(&out_path).map_err(|e| e.to_string())?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
