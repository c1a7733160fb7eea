//! The `wgpu-batch` command-line tool (feature `cli`), run as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgpu-batch"))
        .args(args)
        .output()
        .expect("the wgpu-batch binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-batch-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn info_lists_the_adapters_and_their_compute_limits() {
    let out = tool(&["info"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{} (needs lavapipe: apt install mesa-vulkan-drivers)",
        text(&out.stderr)
    );
    for needle in [
        "vulkan",
        "llvmpipe",
        "max_compute_workgroup_storage_size",
        "32 KiB",
    ] {
        assert!(stdout.contains(needle), "`{needle}` missing from\n{stdout}");
    }
    assert!(
        !text(&out.stderr).contains("error"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_reflects_a_kernel_and_says_whether_it_fuses() {
    let path = temp("saxpy.wgsl");
    std::fs::write(&path, include_str!("../shaders/saxpy.wgsl")).expect("write");
    let out = tool(&["check", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for needle in [
        "entry point:",
        "main",
        "256 x 1 x 1",
        "uniform",
        "storage, read_write",
        "fuses: yes",
    ] {
        assert!(stdout.contains(needle), "`{needle}` missing from\n{stdout}");
    }
}

#[test]
fn check_survives_a_deep_expression_and_refuses_a_deeper_one() {
    let deep = |terms: usize| {
        let sum = vec!["x[id.x]"; terms].join(" + ");
        format!(
            "@group(0) @binding(0) var<storage, read_write> x: array<f32>;\n\
             @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {{\n\
             if id.x < arrayLength(&x) {{ x[id.x] = {sum}; }}\n}}\n"
        )
    };
    let path = temp("deep.wgsl");
    std::fs::write(&path, deep(20_000)).expect("write");
    let out = tool(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("fuses: yes"),
        "{}",
        text(&out.stdout)
    );
    let path = temp("deeper.wgsl");
    std::fs::write(&path, deep(200_000)).expect("write");
    let out = tool(&["check", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("split it"), "{stderr}");
}

#[test]
fn check_locates_a_wgsl_error_and_exits_1() {
    let path = temp("broken.wgsl");
    let source = "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
                  @compute @workgroup_size(64)\n\
                  fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n    y[id.x] = y[id.x] +;\n}\n";
    std::fs::write(&path, source).expect("write");
    let out = tool(&["check", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken.wgsl:4:24"),
        "no file:line:column in\n{stderr}"
    );
    assert!(stderr.contains("expected expression"), "{stderr}");
    let missing = tool(&["check", temp("missing.wgsl").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).starts_with("error: "),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn bench_writes_csv_json_and_a_chart() {
    let dir = temp("bench");
    let out = tool(&[
        "bench",
        "--quick",
        "--backend",
        "noop",
        "--secs",
        "0.05",
        "--threads",
        "1,2",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let csv = std::fs::read_to_string(dir.join("bench.csv")).expect("bench.csv");
    // Two sections x two thread counts x three systems, and a header.
    assert_eq!(csv.lines().count(), 1 + 2 * 2 * 3, "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench.json")).expect("json"))
            .expect("bench.json parses");
    let records = json.as_array().expect("an array of records");
    assert_eq!(records.len(), 12);
    assert!(
        records
            .iter()
            .all(|r| r["jobs_per_s"].as_f64().is_some_and(|v| v > 0.0))
    );
    let svg = std::fs::read_to_string(dir.join("bench.svg")).expect("bench.svg");
    assert!(svg.starts_with("<svg") && svg.contains("threads") && svg.contains("jobs/s"));
    assert!(
        stdout.contains("bench.svg"),
        "the chart's path is printed:\n{stdout}"
    );
}
