//! Small helpers the benchmark programs share.

/// The `p` quantile (0..=1) of sorted samples, nearest-rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)) as usize;
    sorted[index]
}

/// "N cores, CPU model", for the record of where figures were measured.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

/// Sorts `samples` and sums them up: median, min, max, and all of them.
pub fn summary(samples: &mut [f64]) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    serde_json::json!({
        "median": percentile(samples, 0.5),
        "min": samples.first(),
        "max": samples.last(),
        "samples": samples,
    })
}

/// Logs of the benchmark's in-process peers on stderr, when `RUST_LOG`
/// asks for them.
pub fn log_from_env() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

/// Writes a benchmark's results as pretty JSON to `out` (making its
/// directory) and says where.
pub fn write_results(out: &std::path::Path, results: &serde_json::Value) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(results)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("results written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_ranks() {
        let samples = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((percentile(&samples, 0.5) - 3.0).abs() < f64::EPSILON);
        assert!((percentile(&samples, 0.99) - 4.0).abs() < f64::EPSILON);
        assert!((percentile(&samples, 1.0) - 5.0).abs() < f64::EPSILON);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
