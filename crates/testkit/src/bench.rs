//! Small helpers the benchmark programs share.

use std::path::Path;
use std::str::FromStr;

/// The environment variable `name` parsed, or `default` when unset or unparsable.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median of the measurements (the upper one of an even count); `v` must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Files directly in `dir` and their total size in bytes.
pub fn dir_bytes(dir: &Path) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_file() {
            n += 1;
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    (n, bytes)
}

/// The benchmarks' study, written to a temp folder: one patient, 4 series, `BENCH_INSTANCES`
/// instances (320) of `BENCH_ROWS`² pixels (512: about 170 MB in all). Returns the folder,
/// the spec, the instance count and the size in MB.
pub struct BenchStudy {
    pub dir: tempfile::TempDir,
    pub spec: crate::dicom::StudySpec,
    pub instances: usize,
    pub mb: f64,
}

pub fn bench_study(patient: &str, number: u32) -> BenchStudy {
    let instances = env_or::<usize>("BENCH_INSTANCES", 320);
    let rows = env_or::<usize>("BENCH_ROWS", 512) as u16;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = crate::dicom::StudySpec::small(patient, number);
    spec.series = 4;
    spec.instances_per_series = instances.div_ceil(4);
    spec.rows = rows;
    spec.columns = rows;
    crate::dicom::write_study(dir.path(), &spec);
    let (instances, bytes) = dir_bytes(dir.path());
    BenchStudy { dir, spec, instances, mb: bytes as f64 / 1e6 }
}
