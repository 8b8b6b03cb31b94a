//! The run's trace: one line per thing that happened, stamped with the
//! simulated time, hashed as it grows. Two runs of the same seed must give
//! the same hash; the lines themselves are kept only when asked for.

use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub struct Trace {
    start: Instant,
    hasher: Sha256,
    lines: Option<Vec<String>>,
    count: u64,
}

impl Trace {
    pub fn new(keep_lines: bool) -> Self {
        Self {
            start: Instant::now(),
            hasher: Sha256::new(),
            lines: keep_lines.then(Vec::new),
            count: 0,
        }
    }

    /// Simulated time since the run started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    pub fn record(&mut self, what: impl AsRef<str>) {
        let line = format!("{:>9.3}s {}", self.elapsed().as_secs_f64(), what.as_ref());
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        self.count += 1;
        if let Some(lines) = &mut self.lines {
            lines.push(line);
        }
    }

    pub fn lines(&self) -> &[String] {
        self.lines.as_deref().unwrap_or(&[])
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The hash of every line so far, hex.
    pub fn hash(&self) -> String {
        let digest = self.hasher.clone().finalize();
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
