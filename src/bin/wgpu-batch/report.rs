//! `bench`'s results: the records, the table printed at the end, and `bench.csv` /
//! `bench.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::table::{Align, Table, rate};
use crate::{Result, fail};

/// One measurement: a system's median jobs/s at one thread count in one section.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    /// e.g. `saxpy-256`.
    pub section: String,
    /// `vulkan`, `gl`, `noop`, ...
    pub backend: String,
    pub system: String,
    pub threads: usize,
    /// Elements per job.
    pub elements: usize,
    pub jobs_per_s: f64,
}

/// The sections in the order they were measured, and each one's elements per job.
pub fn sections(records: &[Record]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for r in records {
        if !out.iter().any(|(s, _)| *s == r.section) {
            out.push((r.section.clone(), r.elements));
        }
    }
    out
}

/// The systems in the order they were measured.
pub fn systems(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        if !out.contains(&r.system) {
            out.push(r.system.clone());
        }
    }
    out
}

/// The thread counts of `section`, ascending.
pub fn threads(records: &[Record], section: &str) -> Vec<usize> {
    let mut out: Vec<usize> = records
        .iter()
        .filter(|r| r.section == section)
        .map(|r| r.threads)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The jobs/s of one cell, if measured.
pub fn lookup(records: &[Record], section: &str, system: &str, threads: usize) -> Option<f64> {
    records
        .iter()
        .find(|r| r.section == section && r.system == system && r.threads == threads)
        .map(|r| r.jobs_per_s)
}

/// Per section: one row per thread count, one column per system, and the last system's
/// speed-up over the first (fused engine over plain wgpu).
pub fn tables(records: &[Record]) -> String {
    let names = systems(records);
    let mut out = String::new();
    for (section, elements) in sections(records) {
        let _ = writeln!(out, "\n{section} ({elements} elements per job), jobs/s:\n");
        let mut columns = vec![("threads", Align::Right)];
        columns.extend(names.iter().map(|n| (n.as_str(), Align::Right)));
        let ratio = format!("{} / {}", short(names.last()), short(names.first()));
        if names.len() > 1 {
            columns.push((ratio.as_str(), Align::Right));
        }
        let mut t = Table::new(&columns);
        for th in threads(records, &section) {
            let cells: Vec<Option<f64>> = names
                .iter()
                .map(|n| lookup(records, &section, n, th))
                .collect();
            let mut row = vec![th.to_string()];
            row.extend(cells.iter().map(|c| c.map_or_else(|| "-".to_owned(), rate)));
            if let (Some(Some(first)), Some(Some(last))) = (cells.first(), cells.last()) {
                row.push(format!("{:.2}x", last / first));
            }
            t.row(row);
        }
        out += &t.plain();
    }
    out
}

/// A system's name without its qualifier, for the ratio's header ("engine, fused" → "fused").
fn short(name: Option<&String>) -> &str {
    name.map_or("", |n| n.rsplit(", ").next().unwrap_or(n))
}

/// Writes `bench.csv` and `bench.json` into `dir`; returns their paths.
pub fn write(dir: &Path, records: &[Record]) -> Result<Vec<PathBuf>> {
    let mut csv = String::from("section,backend,system,threads,elements,jobs_per_s\n");
    for r in records {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{:.1}",
            r.section,
            r.backend,
            csv_field(&r.system),
            r.threads,
            r.elements,
            r.jobs_per_s
        );
    }
    let json = serde_json::to_string_pretty(records)
        .map_err(|e| fail(format!("encoding the results as JSON: {e}")))?;
    let csv_path = dir.join("bench.csv");
    let json_path = dir.join("bench.json");
    write_file(&csv_path, csv.as_bytes())?;
    write_file(&json_path, (json + "\n").as_bytes())?;
    Ok(vec![csv_path, json_path])
}

/// A CSV field, quoted when it holds a comma or a quote (system names hold commas).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| fail(format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(system: &str, threads: usize, jobs_per_s: f64) -> Record {
        Record {
            section: "saxpy-256".into(),
            backend: "noop".into(),
            system: system.into(),
            threads,
            elements: 256,
            jobs_per_s,
        }
    }

    #[test]
    fn tabulates_and_quotes() {
        let records = vec![
            rec("plain wgpu, global lock", 1, 1000.0),
            rec("engine, fused", 1, 4000.0),
            rec("plain wgpu, global lock", 2, 900.0),
            rec("engine, fused", 2, 7200.0),
        ];
        let text = tables(&records);
        assert!(text.contains("fused / global lock"), "{text}");
        assert!(text.contains("8.00x"), "{text}");
        assert_eq!(threads(&records, "saxpy-256"), vec![1, 2]);
        assert_eq!(csv_field("a, b"), "\"a, b\"");
    }
}
