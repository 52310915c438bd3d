//! What the FPGA backends write: a folder of files, with test vectors for its testbench.

/// Test vectors for a testbench: samples in, the outputs expected of them.
#[derive(Clone, Debug)]
pub struct TestVectors {
    /// `samples * input_len` floats.
    pub inputs: Vec<f32>,
    /// `samples * output_len` floats.
    pub expected: Vec<f32>,
    /// Where they come from, for the project's README.
    pub origin: String,
}

/// A generated project: files by path relative to its folder.
#[derive(Clone, Debug, Default)]
pub struct Project {
    pub files: Vec<(String, Vec<u8>)>,
}

impl Project {
    /// A project holding the host code of `plan` (`host/`), which both FPGA backends ship.
    pub fn with_host(plan: &crate::Plan) -> Result<Project, crate::PlanError> {
        let name = &plan.name;
        let host = crate::host::host_code(plan)?;
        let mut p = Project::default();
        p.add(format!("host/{name}_host.h"), host.header);
        p.add(format!("host/{name}_host.c"), host.source);
        p.add("host/bnnc_host_ops.h", crate::host::HOST_OPS_H);
        Ok(p)
    }

    /// Adds a file.
    pub fn add(&mut self, path: impl Into<String>, contents: impl Into<Vec<u8>>) {
        self.files.push((path.into(), contents.into()));
    }
}

/// Little-endian f32 bytes, as the testbenches read vectors.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
