//! What a pass tells its user: [`PassReport`]. Every pass fills one and the manager collects
//! them, so it lives below both.

/// What one run of a pass changed, in words users read in `bnnc inspect --passes`.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    /// One line per change or group of changes.
    pub changes: Vec<String>,
}

impl PassReport {
    /// Records a change.
    pub fn note(&mut self, change: impl Into<String>) {
        self.changes.push(change.into());
    }
}
