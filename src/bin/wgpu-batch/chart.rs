//! `bench.svg`: one panel per section, stacked in one SVG. In each, x is the thread count (on a
//! log2 axis, so 1, 2, 4, 8 are evenly spaced) and y is jobs/s from zero; one line with points
//! per system, and a legend.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Record, lookup, sections, systems, threads};
use crate::table::rate;
use crate::{Result, fail};

/// One color per system, in measurement order: matplotlib's first "tab10" colors, distinct
/// from each other and readable on white (plotters' palette starts with a pale yellow).
const COLORS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Pixels of one panel.
const PANEL: (u32, u32) = (900, 440);

/// Draws every section of `records` into `path`. `backend` names the backend and adapter for
/// the titles.
pub fn write(path: &Path, records: &[Record], backend: &str) -> Result<()> {
    let sections = sections(records);
    if sections.is_empty() {
        return Err(fail("no results to chart"));
    }
    let mut svg = String::new();
    {
        let height = PANEL.1 * sections.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (PANEL.0, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let panels = root.split_evenly((sections.len(), 1));
        for ((section, elements), area) in sections.iter().zip(&panels) {
            let title = format!("SAXPY, {elements} elements per job, on {backend}");
            panel(area, records, section, &title)?;
        }
        root.present().map_err(drawing)?;
    }
    crate::report::write_file(path, svg.as_bytes())
}

fn drawing(e: impl std::fmt::Display) -> crate::Failure {
    fail(format!("drawing the chart: {e}"))
}

/// One section's chart: a line per system over the thread counts.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    records: &[Record],
    section: &str,
    title: &str,
) -> Result<()> {
    let counts = threads(records, section);
    // x is log2(threads) in hundredths: plotters' key points need an integer axis (its f64
    // axis with key points has no label formatter), and hundredths place 3 or 6 threads well.
    let xs: Vec<i32> = counts.iter().map(|&t| log2_x(t)).collect();
    let lo = xs.first().copied().unwrap_or(0) - 30;
    let hi = xs.last().copied().unwrap_or(0) + 30;
    let top = records
        .iter()
        .filter(|r| r.section == section)
        .map(|r| r.jobs_per_s)
        .fold(0.0, f64::max);
    // The top quarter is left empty for the legend, so it never covers a line.
    let top = if top > 0.0 { top * 1.35 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 21))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d((lo..hi).with_key_points(xs.clone()), 0.0..top)
        .map_err(drawing)?;
    // Ticks sit exactly on the measured thread counts; label each with its count.
    let label = |x: &i32| {
        counts
            .iter()
            .find(|&&t| log2_x(t) == *x)
            .map_or_else(String::new, ToString::to_string)
    };
    chart
        .configure_mesh()
        .x_desc("threads (log2 scale)")
        .y_desc("jobs/s")
        .label_style(("sans-serif", 16))
        .max_light_lines(1)
        .axis_desc_style(("sans-serif", 18))
        .x_label_formatter(&label)
        .y_label_formatter(&|y| rate(*y))
        .draw()
        .map_err(drawing)?;
    for (i, system) in systems(records).iter().enumerate() {
        let points: Vec<(i32, f64)> = counts
            .iter()
            .zip(&xs)
            .filter_map(|(&t, &x)| Some((x, lookup(records, section, system, t)?)))
            .collect();
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(drawing)?
            .label(system.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(PointSeries::of_element(
                points,
                4,
                color.filled(),
                &|c, s, st| Circle::new(c, s, st),
            ))
            .map_err(drawing)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 17))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(drawing)
}

/// A thread count's place on the x axis: log2 of it, in hundredths.
fn log2_x(threads: usize) -> i32 {
    ((threads.max(1) as f64).log2() * 100.0).round() as i32
}
