//! `wgpu-batch bench`: the throughput suite. SAXPY jobs of 256 and 4,096 elements (the
//! sections); for each section and thread count, the jobs/s of plain wgpu behind one lock, the
//! engine unfused and the engine fused, interleaved within each repetition so drift in the
//! machine's speed hits every system alike. Writes `bench.csv`, `bench.json` and `bench.svg`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use wgpu_batch::wgpu;

use crate::report::{self, Record};
use crate::systems::{Engined, Locked, System, WINDOW, Work};
use crate::{Backend, INSTALL_HINT, Result, emit, fail};

/// Elements per job of each section.
const SECTIONS: [usize; 2] = [256, 4096];

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Short run: 0.2 s per measurement, one repetition (under a minute on lavapipe).
    #[arg(long)]
    quick: bool,
    /// The backend to measure (default: vulkan, when a Vulkan adapter exists).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Directory for bench.csv, bench.json and bench.svg (created if missing).
    #[arg(long, value_name = "DIR", default_value = "target/wgpu-batch-bench")]
    out: PathBuf,
    /// Seconds per measurement [default: 0.5, or 0.2 with --quick].
    #[arg(long, value_name = "S", value_parser = parse_secs, allow_negative_numbers = true)]
    secs: Option<f64>,
    /// Thread counts to measure, comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,2,4,8",
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    threads: Vec<u16>,
    /// Repetitions per measurement; the median is reported [default: 3, or 1 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    reps: Option<u16>,
}

fn parse_secs(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        Ok(_) => Err("must be more than 0 and at most 3600 seconds".into()),
        Err(_) => Err(format!("`{text}` is not a number of seconds")),
    }
}

/// What one run measures.
struct Plan {
    backend: Backend,
    secs: Duration,
    reps: usize,
    threads: Vec<usize>,
}

/// Runs the suite and writes its files.
pub fn run(args: &Args) -> Result<()> {
    let backend = choose_backend(args.backend)?;
    let mut threads: Vec<usize> = args.threads.iter().map(|&t| usize::from(t)).collect();
    threads.sort_unstable();
    threads.dedup();
    let plan = Plan {
        backend,
        secs: Duration::from_secs_f64(args.secs.unwrap_or(if args.quick { 0.2 } else { 0.5 })),
        reps: args
            .reps
            .map_or(if args.quick { 1 } else { 3 }, usize::from),
        threads,
    };
    // Fail on an unwritable directory now, not after the measurements.
    std::fs::create_dir_all(&args.out)
        .map_err(|e| fail(format!("creating {}: {e}", args.out.display())))?;
    let started = Instant::now();
    let locked = Locked::new(backend)?;
    let unfused = Engined::new(backend, false)?;
    let fused = Engined::new(backend, true)?;
    let adapter = fused.adapter();
    let systems: [&dyn System; 3] = [&locked, &unfused, &fused];
    emit(&intro(&plan, &adapter, systems.len()))?;
    let records = measure(&plan, &systems)?;
    let mut out = report::tables(&records);
    let mut files = report::write(&args.out, &records)?;
    let svg = args.out.join("bench.svg");
    crate::chart::write(&svg, &records, &format!("{}: {adapter}", backend.name()))?;
    files.push(svg);
    out += &format!("\ntook {:.1} s; wrote:\n", started.elapsed().as_secs_f64());
    for f in files {
        out += &format!("  {}\n", f.display());
    }
    emit(&out)
}

/// The backend asked for, else Vulkan when an adapter exists; either way, one must exist.
fn choose_backend(asked: Option<Backend>) -> Result<Backend> {
    let backend = asked.unwrap_or(Backend::Vulkan);
    // noop always exists once named; there is nothing to look for.
    if backend == Backend::Noop || !crate::adapters(backend.backends()).is_empty() {
        return Ok(backend);
    }
    let others = crate::adapters(wgpu::Backends::all() - wgpu::Backends::NOOP - backend.backends());
    let mut message = format!("no {} adapter found", backend.name());
    if let Some(a) = others.first() {
        let info = a.get_info();
        message += &format!(
            "; there is {} on {}: try --backend {}",
            info.name,
            info.backend.to_str(),
            info.backend.to_str()
        );
    } else {
        message += &format!("; {INSTALL_HINT}");
    }
    message += " (or --backend noop, which measures host overhead only)";
    Err(fail(message))
}

fn intro(plan: &Plan, adapter: &str, systems: usize) -> String {
    let list: Vec<String> = plan.threads.iter().map(ToString::to_string).collect();
    let measurements = SECTIONS.len() * plan.threads.len() * systems * plan.reps;
    format!(
        "SAXPY throughput on {}: {adapter}\n\
         {} s per measurement, {} repetition(s) (median), threads {}\n\
         each engine thread keeps {WINDOW} jobs outstanding; about {:.0} s of measurement\n",
        plan.backend.name(),
        plan.secs.as_secs_f64(),
        plan.reps,
        list.join(","),
        measurements as f64 * plan.secs.as_secs_f64(),
    )
}

/// Every section: verify each system once, then measure every (threads, system) `reps`
/// times, systems interleaved. One progress bar per section.
fn measure(plan: &Plan, systems: &[&dyn System]) -> Result<Vec<Record>> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {pos:>3}/{len:3} {elapsed:>4} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let per_section = (plan.threads.len() * systems.len() * plan.reps) as u64;
    let sections: Vec<ProgressBar> = SECTIONS
        .iter()
        .map(|n| {
            let bar = bars.add(ProgressBar::new(per_section));
            bar.set_style(style.clone());
            bar.set_prefix(format!("saxpy-{n}"));
            bar.set_message("waiting");
            bar
        })
        .collect();
    let mut records = Vec::new();
    for (&elements, bar) in SECTIONS.iter().zip(&sections) {
        let work = Work::new(elements);
        // The clock shows this section's time, not the time it spent waiting its turn.
        bar.reset_elapsed();
        bar.set_message("verifying against the CPU");
        // noop executes nothing: only the result's length can be checked there.
        let exact = plan.backend != Backend::Noop;
        for s in systems {
            s.verify(&work, exact)?;
        }
        records.extend(section(plan, systems, &work, elements, bar)?);
        bar.finish_with_message("done");
    }
    Ok(records)
}

/// One section's measurements, as records of the median jobs/s.
fn section(
    plan: &Plan,
    systems: &[&dyn System],
    work: &Work,
    elements: usize,
    bar: &ProgressBar,
) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for &threads in &plan.threads {
        let mut samples = vec![Vec::with_capacity(plan.reps); systems.len()];
        for _ in 0..plan.reps {
            for (s, samples) in systems.iter().zip(&mut samples) {
                bar.set_message(format!("{}, {threads} thread(s)", s.name()));
                let start = Instant::now();
                let jobs = s.run_for(work, threads, plan.secs)?;
                samples.push(jobs as f64 / start.elapsed().as_secs_f64());
                bar.inc(1);
            }
        }
        for (s, samples) in systems.iter().zip(samples) {
            records.push(Record {
                section: format!("saxpy-{elements}"),
                backend: plan.backend.name().to_owned(),
                system: s.name().to_owned(),
                threads,
                elements,
                jobs_per_s: median(samples),
            });
        }
    }
    Ok(records)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
