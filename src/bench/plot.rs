//! The benchmark's PNG: end-to-end latency (and lag, when paced) over time for each stream,
//! and the per-stage working time over time; for `--capacity`, latency against stream count.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::BenchReport;

/// A system font for the labels (fonts-dejavu-core, installed by scripts/setup.sh).
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = FONT_PATHS
                .iter()
                .find_map(|p| std::fs::read(p).ok())
                .ok_or("no DejaVuSans.ttf font found (install fonts-dejavu-core)")?;
            // Registered fonts live for the whole process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "the font could not be parsed".to_owned())
        })
        .clone()
}

/// Draws the plot to `path` (PNG).
pub fn draw(report: &BenchReport, path: &Path) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(400);
    let end = report
        .per_stream
        .iter()
        .filter_map(|s| s.series.last().map(|x| x.at_s))
        .fold(1.0f64, f64::max);
    let max_latency = report
        .per_stream
        .iter()
        .map(|s| s.end_to_end_ms.p99.max(s.lag_ms.map_or(0.0, |l| l.p99)))
        .fold(1.0f64, f64::max)
        * 1.5;
    let title = format!(
        "{} — {}, {} stream(s): latency per frame (ms)",
        Path::new(&report.source)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        if report.paced { "paced 1x" } else { "offline" },
        report.streams
    );
    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..end, 0f64..max_latency)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in report.per_stream.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.series
                    .iter()
                    .map(|x| (x.at_s, x.latency_ms.min(max_latency))),
                color.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?
            .label(format!("stream {i} end-to-end"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if report.paced {
            let lag_color = Palette99::pick(i + 8).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    s.series
                        .iter()
                        .filter_map(|x| x.lag_ms.map(|l| (x.at_s, l.min(max_latency)))),
                    lag_color.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("stream {i} lag behind schedule"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], lag_color));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;

    let Some(first) = report.per_stream.first() else {
        return root.present().map_err(|e| e.to_string());
    };
    let max_stage = first
        .stages_ms
        .iter()
        .map(|(_, p)| p.p99)
        .fold(0.1f64, f64::max)
        * 1.5;
    let mut stages = ChartBuilder::on(&bottom)
        .caption(
            "stream 0: stage working time per frame (ms)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..end, 0f64..max_stage)
        .map_err(|e| e.to_string())?;
    stages
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, color, pick) in [
        ("detect", RED, 0usize),
        ("encode (crop + expression)", BLUE, 1),
    ] {
        stages
            .draw_series(LineSeries::new(
                first.series.iter().map(move |x| {
                    let v = if pick == 0 { x.detect_ms } else { x.encode_ms };
                    (x.at_s, v.min(max_stage))
                }),
                color.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    stages
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Draws the capacity search to `path` (PNG): end-to-end p50 and p99 (log scale) against the
/// number of paced streams, one point per trial (filled: every stream held, cross: late), with
/// the capacity marked.
pub fn draw_capacity(report: &super::capacity::CapacityReport, path: &Path) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut trials: Vec<_> = report.trials.iter().collect();
    trials.sort_by_key(|t| t.streams);
    let most = trials.last().map_or(1, |t| t.streams) as i32;
    // log10 of the milliseconds on a linear axis, labelled in ms (plotters' log scale leaves
    // the decades below 10 without labels).
    let floor = |v: f64| v.max(0.01).log10();
    let (lo, hi) = trials.iter().fold((f64::MAX, 0.0f64), |(lo, hi), t| {
        (
            lo.min(floor(t.end_to_end_ms.p50)),
            hi.max(floor(t.end_to_end_ms.p99)),
        )
    });
    let (lo, hi) = if trials.is_empty() {
        (-1.0, 1.0)
    } else {
        (lo - 0.15, hi + 0.15)
    };
    let title = format!(
        "{} — paced streams: end-to-end latency (ms); capacity {}",
        Path::new(&report.source)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        report.capacity
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0i32..most + 1, lo..hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels((most as usize + 2).min(20))
        .y_labels(12)
        .y_label_formatter(&|v| {
            let ms = 10f64.powf(*v);
            if ms >= 10.0 {
                format!("{ms:.0}")
            } else {
                format!("{ms:.1}")
            }
        })
        .x_desc("streams at once")
        .y_desc("ms (log)")
        .draw()
        .map_err(|e| e.to_string())?;
    if report.capacity > 0 {
        let x = report.capacity as i32;
        let mark = GREEN.mix(0.6);
        chart
            .draw_series(LineSeries::new([(x, lo), (x, hi)], mark.stroke_width(3)))
            .map_err(|e| e.to_string())?
            .label(format!("capacity: {} stream(s)", report.capacity))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], mark.stroke_width(3))
            });
    }
    type Pick = fn(&super::capacity::Trial) -> f64;
    let lines: [(&str, RGBColor, Pick); 2] = [
        ("p50", BLUE, |t| t.end_to_end_ms.p50),
        ("p99", RED, |t| t.end_to_end_ms.p99),
    ];
    for (name, color, pick) in lines {
        chart
            .draw_series(LineSeries::new(
                trials.iter().map(|t| (t.streams as i32, floor(pick(t)))),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(format!("end-to-end {name}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                trials
                    .iter()
                    .filter(|t| t.held)
                    .map(|t| Circle::new((t.streams as i32, floor(pick(t))), 4, color.filled())),
            )
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                trials.iter().filter(|t| !t.held).map(|t| {
                    Cross::new((t.streams as i32, floor(pick(t))), 6, color.stroke_width(2))
                }),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
