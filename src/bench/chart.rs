//! The benchmark's PNG charts, sized and lettered for a projector, in the Okabe-Ito palette that
//! colour-blind viewers can tell apart.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use super::results::{Results, Throughput, Versus};
use super::stale::{StalePass, StaleReads};
use crate::settings::WaitPoint;

/// The latency chart's file name.
pub const LATENCY_FILE: &str = "quorum_latency.png";
/// The throughput chart's file name.
pub const THROUGHPUT_FILE: &str = "throughput.png";
/// The stale-read chart's file name.
pub const STALE_READS_FILE: &str = "stale_reads.png";
/// The Redis comparison chart's file name.
pub const VERSUS_REDIS_FILE: &str = "versus_redis.png";
/// Size of every chart, in pixels.
pub const SIZE: (u32, u32) = (1600, 1000);

const FONT: &str = "sans-serif";
const ORANGE: RGBColor = RGBColor(230, 159, 0);
const SKY_BLUE: RGBColor = RGBColor(86, 180, 233);
const GREEN: RGBColor = RGBColor(0, 158, 115);
const BLUE: RGBColor = RGBColor(0, 114, 178);
const VERMILLION: RGBColor = RGBColor(213, 94, 0);
const PURPLE: RGBColor = RGBColor(204, 121, 167);

/// Registers the embedded DejaVu Sans as the charts' font (plotters draws text with it).
fn register() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded font could not be read".to_owned());
    });
    result
}

/// Latency against quorum: every write, the mean and percentiles per quorum, and the theory.
pub fn latency(results: &Results, path: &Path) -> Result<(), String> {
    register()?;
    let config = &results.config;
    let quorums = &results.quorums;
    let highest = quorums.iter().map(|q| q.quorum).max().unwrap_or(1) as f64;
    let y_max = quorums
        .iter()
        .flat_map(|q| {
            let theory = [Some(q.theoretical_mean_ms), q.theoretical_p99_ms];
            q.samples_ms
                .iter()
                .copied()
                .chain(theory.into_iter().flatten())
        })
        .fold(1.0, f64::max)
        * 1.1;
    let title = format!(
        "Write latency by write quorum: lag uniform in [{}, {}] ms, {} followers, {} writes each",
        config.min_delay_ms,
        config.max_delay_ms,
        config.followers.len(),
        config.writes
    );

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let y_label = |y: &f64| format!("{y:.0}");
    let axes = QuorumAxes {
        title,
        highest,
        y_max,
        y_desc: "write latency (ms)",
        y_label: &y_label,
    };
    let mut chart = axes.draw(&root)?;

    // Every write, spread sideways by its rank so that equal latencies do not hide each other.
    let samples = quorums.iter().flat_map(|q| {
        let n = q.samples_ms.len().max(2) as f64;
        q.samples_ms
            .iter()
            .enumerate()
            .map(move |(i, &ms)| (q.quorum as f64 - 0.2 + 0.4 * i as f64 / (n - 1.0), ms))
    });
    chart
        .draw_series(samples.map(|point| Circle::new(point, 5, SKY_BLUE.mix(0.5).filled())))
        .map_err(draw_error)?
        .label("one write")
        .legend(|(x, y)| Circle::new((x + 15, y), 7, SKY_BLUE.filled()));

    let series = |pick: fn(&super::results::QuorumResult) -> Option<f64>| -> Vec<(f64, f64)> {
        quorums
            .iter()
            .filter_map(|q| Some((q.quorum as f64, pick(q)?)))
            .collect()
    };
    let lines = [
        ("mean", ORANGE, series(|q| q.latency_ms.mean)),
        ("p50", GREEN, series(|q| q.latency_ms.p50)),
        ("p90", PURPLE, series(|q| q.latency_ms.p90)),
        ("p99", VERMILLION, series(|q| q.latency_ms.p99)),
    ];
    for (label, color, points) in lines {
        line_with_markers(&mut chart, label.to_owned(), color, points)?;
    }
    let theory: Vec<(f64, f64)> = quorums
        .iter()
        .map(|q| (q.quorum as f64, q.theoretical_mean_ms))
        .collect();
    let style = BLACK.stroke_width(3);
    chart
        .draw_series(DashedLineSeries::new(theory, 14, 10, style))
        .map_err(draw_error)?
        .label("theory's mean: a + k(b - a)/(N + 1)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 30, y)], style));
    // The theory's median and 99th percentile, dashed in the colours of the measured ones.
    let quantiles = [
        (
            "theory's p50: Beta(k, N + 1 - k)",
            GREEN,
            series(|q| q.theoretical_p50_ms),
        ),
        ("theory's p99", VERMILLION, series(|q| q.theoretical_p99_ms)),
    ];
    for (label, color, points) in quantiles {
        if points.is_empty() {
            continue;
        }
        let style = color.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(points, 8, 8, style))
            .map_err(draw_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 30, y)], style));
    }

    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(draw_error)
}

/// Writes per second against concurrency, one line per quorum.
pub fn throughput(throughput: &Throughput, path: &Path) -> Result<(), String> {
    register()?;
    let runs = &throughput.runs;
    let x_max = runs.iter().map(|r| r.concurrency).max().unwrap_or(1) as f64;
    let y_max = runs.iter().map(|r| r.writes_per_sec).fold(1.0, f64::max) * 1.15;
    let title = format!(
        "Throughput: closed-loop writes for {} s per point, lag [{}, {}] ms",
        throughput.seconds, throughput.min_delay_ms, throughput.max_delay_ms
    );

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 34))
        .margin(30)
        .x_label_area_size(90)
        .y_label_area_size(130)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("successful writes per second")
        .x_label_formatter(&whole_numbers)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .axis_desc_style((FONT, 30))
        .label_style((FONT, 26))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_error)?;

    let mut quorums: Vec<usize> = runs.iter().map(|r| r.quorum).collect();
    quorums.dedup();
    let palette = [BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY_BLUE];
    for (i, quorum) in quorums.into_iter().enumerate() {
        let color = palette[i % palette.len()];
        let points: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.quorum == quorum)
            .map(|r| (r.concurrency as f64, r.writes_per_sec))
            .collect();
        line_with_markers(&mut chart, format!("quorum {quorum}"), color, points)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(draw_error)
}

/// The stale-read lesson against quorum: the share of follower reads right after a write that
/// were stale, without and with `min_version`, and the share of leader reads during a write
/// that already showed it, at each wait point.
pub fn stale_reads(lesson: &StaleReads, path: &Path) -> Result<(), String> {
    register()?;
    let passes = &lesson.passes;
    let highest = passes.iter().map(|p| p.quorum).max().unwrap_or(1) as f64;
    let title = format!(
        "Reads right after a write: {} writes per quorum, wait point and kind of read",
        lesson.writes
    );
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let y_label = |y: &f64| {
        if *y <= 100.0 {
            format!("{y:.0}")
        } else {
            String::new()
        }
    };
    let axes = QuorumAxes {
        title,
        highest,
        // Room above 100 % for the legend.
        y_max: 160.0,
        y_desc: "share of reads (%)",
        y_label: &y_label,
    };
    let mut chart = axes.draw(&root)?;
    let series = |wait_point: WaitPoint, min_version: bool, pick: fn(&StalePass) -> f64| {
        (passes.iter())
            .filter(|p| p.wait_point == wait_point && p.min_version == min_version)
            .map(|p| (p.quorum as f64, pick(p)))
            .collect::<Vec<_>>()
    };
    let stale = |p: &StalePass| 100.0 * p.stale as f64 / p.answered_reads().max(1) as f64;
    let shown = |wait_point: WaitPoint| {
        (passes.iter())
            .filter(|p| p.wait_point == wait_point && !p.min_version)
            .map(|p| {
                let (showed, reads) = lesson.leader_showed(wait_point, p.quorum);
                (p.quorum as f64, 100.0 * showed as f64 / reads.max(1) as f64)
            })
            .collect::<Vec<_>>()
    };
    let mut lines = Vec::new();
    let colors = [
        (WaitPoint::AfterCommit, [BLUE, GREEN, VERMILLION]),
        (WaitPoint::AfterSync, [SKY_BLUE, PURPLE, ORANGE]),
    ];
    for (wait_point, [plain, with_min, leader]) in colors {
        let stale_reads = |min_version| series(wait_point, min_version, stale);
        lines.push((
            format!("follower read stale, {wait_point}"),
            plain,
            stale_reads(false),
        ));
        lines.push((
            format!("follower read with min_version stale, {wait_point}"),
            with_min,
            stale_reads(true),
        ));
        lines.push((
            format!("leader read during the write showed it, {wait_point}"),
            leader,
            shown(wait_point),
        ));
    }
    for (label, color, points) in lines {
        line_with_markers(&mut chart, label, color, points)?;
    }
    // At the answer, k of the N followers hold the write, and a random one lacks it with
    // probability (N - k)/N; more arrive while the read is on its way.
    let followers = lesson.followers as f64;
    let theory: Vec<(f64, f64)> = (passes.iter())
        .filter(|p| p.wait_point == WaitPoint::AfterCommit && !p.min_version)
        .map(|p| {
            (
                p.quorum as f64,
                100.0 * (followers - p.quorum as f64) / followers,
            )
        })
        .collect();
    let style = BLACK.stroke_width(3);
    chart
        .draw_series(DashedLineSeries::new(theory, 14, 10, style))
        .map_err(draw_error)?
        .label("theory at the answer: (N - k)/N of the followers lack it")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 30, y)], style));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(draw_error)
}

/// Redis against semisync-kv: writes per second and p99 latency for each load, side by side.
pub fn versus_redis(versus: &Versus, path: &Path) -> Result<(), String> {
    register()?;
    let runs = &versus.runs;
    let quorums: std::collections::BTreeSet<usize> = runs.iter().map(|r| r.quorum).collect();
    let title = format!(
        "Redis {} (SET + WAIT) vs semisync-kv at zero lag: {} replicas, quorum {}, {} s per load",
        versus.redis_version,
        versus.replicas,
        quorums
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        versus.seconds
    );
    // semisync-kv over RESP too, when every run drove it (a run of an earlier version did not).
    let resp = runs.iter().all(|r| r.resp.is_some());
    let mut systems = vec![
        ("Redis, SET then WAIT", ORANGE),
        ("Redis, SET + WAIT pipelined", VERMILLION),
        ("semisync-kv, HTTP", BLUE),
    ];
    if resp {
        systems.push(("semisync-kv, RESP SET then WAIT", SKY_BLUE));
        systems.push(("semisync-kv, RESP SET at the quorum", GREEN));
    }
    let several_quorums = runs.windows(2).any(|w| w[0].quorum != w[1].quorum);
    let several_rounds = runs.iter().any(|r| r.round > 1);
    // Short, so that four or more categories fit under the bars: the title names the quorum,
    // and "r2" is the second round.
    let labels: Vec<String> = runs
        .iter()
        .map(|r| {
            let mut label = match several_quorums {
                true => format!("q{}, {} clients", r.quorum, r.concurrency),
                false => format!("{} clients", r.concurrency),
            };
            if several_rounds {
                label = label.replace(" clients", &format!(" clients, r{}", r.round));
            }
            label
        })
        .collect();
    let of_each = |value: fn(&super::results::ThroughputRun) -> f64| -> Vec<Vec<f64>> {
        runs.iter()
            .map(|r| {
                let mut values = vec![
                    value(&r.redis_two_trips),
                    value(&r.redis),
                    value(&r.semisync),
                ];
                if let (true, Some(over_resp)) = (resp, &r.resp) {
                    values.push(value(&over_resp.set_then_wait));
                    values.push(value(&over_resp.set_at_quorum));
                }
                values
            })
            .collect()
    };
    let rates = of_each(|run| run.writes_per_sec);
    let p99s = of_each(|run| run.latency_ms.p99.unwrap_or(0.0));

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let root = root.titled(&title, (FONT, 34)).map_err(draw_error)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    bars(
        &left,
        "successful writes per second",
        &labels,
        &systems,
        &rates,
        0,
    )?;
    bars(
        &right,
        "p99 write latency (ms)",
        &labels,
        &systems,
        &p99s,
        2,
    )?;
    root.present().map_err(draw_error)
}

/// One bar per system in each category, each with its value on top: `values[category]` holds
/// one value per system, in the order of `systems`.
fn bars(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    y_desc: &str,
    labels: &[String],
    systems: &[(&str, RGBColor)],
    values: &[Vec<f64>],
    decimals: usize,
) -> Result<(), String> {
    let count = values.len().max(1);
    let y_max = values
        .iter()
        .flatten()
        .copied()
        .fold(f64::MIN_POSITIVE, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .margin(30)
        .x_label_area_size(70)
        .y_label_area_size(130)
        .build_cartesian_2d(-0.5..count as f64 - 0.5, 0.0..y_max)
        .map_err(draw_error)?;
    let category = |x: &f64| {
        let index = x.round();
        if (x - index).abs() < 1e-6 && index >= 0.0 {
            labels.get(index as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(count)
        .x_label_formatter(&category)
        .y_desc(y_desc)
        .y_label_formatter(&|y| format!("{y:.*}", decimals.saturating_sub(1)))
        .axis_desc_style((FONT, 30))
        .label_style((FONT, 26))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_error)?;

    // The bars of a category share 0.8 of its width, with a small gap between them.
    let width = 0.8 / systems.len().max(1) as f64;
    for (system, &(name, color)) in systems.iter().enumerate() {
        let from = -0.4 + width * system as f64 + 0.01;
        let to = from + width - 0.02;
        let heights: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, category)| (i as f64, category.get(system).copied().unwrap_or(0.0)))
            .collect();
        let rectangles = heights
            .iter()
            .map(|&(x, y)| Rectangle::new([(x + from, 0.0), (x + to, y)], color.filled()));
        chart
            .draw_series(rectangles)
            .map_err(draw_error)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 9), (x + 20, y + 9)], color.filled()));
        let style = TextStyle::from((FONT, 24)).pos(Pos::new(HPos::Center, VPos::Bottom));
        let numbers = heights.iter().map(|&(x, y)| {
            Text::new(
                format!("{y:.decimals$}"),
                (x + (from + to) / 2.0, y),
                style.clone(),
            )
        });
        chart.draw_series(numbers).map_err(draw_error)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// The axes of a chart against the write quorum, 1 to `highest`, on a white page.
struct QuorumAxes<'a> {
    title: String,
    highest: f64,
    y_max: f64,
    y_desc: &'a str,
    y_label: &'a dyn Fn(&f64) -> String,
}

impl QuorumAxes<'_> {
    /// Fills `root` and draws the caption, the axes and their labels on it.
    fn draw<'r, 'b>(
        &self,
        root: &'r DrawingArea<BitMapBackend<'b>, Shift>,
    ) -> Result<Chart<'r, 'b>, String> {
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 34))
            .margin(30)
            .x_label_area_size(90)
            .y_label_area_size(120)
            .build_cartesian_2d(0.5..self.highest + 0.5, 0.0..self.y_max)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_labels(self.highest as usize + 1)
            .x_label_formatter(&whole_numbers)
            .x_desc("write quorum (follower acks the leader waits for)")
            .y_desc(self.y_desc)
            .y_label_formatter(self.y_label)
            .axis_desc_style((FONT, 30))
            .label_style((FONT, 26))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_error)?;
        Ok(chart)
    }
}

/// A chart drawn on an area borrowed for `'r`, of a bitmap that borrows its path for `'b`.
type Chart<'r, 'b> =
    ChartContext<'r, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws a labelled line through `points`, with a marker on each.
fn line_with_markers(
    chart: &mut Chart<'_, '_>,
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
) -> Result<(), String> {
    let style = color.stroke_width(4);
    chart
        .draw_series(LineSeries::new(points.clone(), style))
        .map_err(draw_error)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 30, y)], style));
    let markers = points
        .into_iter()
        .map(|p| Circle::new(p, 8, color.filled()));
    chart.draw_series(markers).map_err(draw_error)?;
    Ok(())
}

/// Draws the legend of the series labelled so far, in large type on a light box.
fn legend<'r, 'b: 'r>(
    chart: &mut Chart<'r, 'b>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 26))
        .margin(15)
        .draw()
        .map_err(draw_error)
}

/// An axis label for whole numbers only (the axis may place ticks between them).
fn whole_numbers(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        format!("{:.0}", x.round())
    } else {
        String::new()
    }
}

fn draw_error(err: impl std::fmt::Display) -> String {
    format!("cannot draw the chart: {err}")
}
