//! SVG plots of a sweep (plotters' SVG backend, no system fonts needed).

use crate::report::Report;
use crate::stats;
use crate::LoadtestError;
use plotters::prelude::*;
use std::path::Path;

fn err(e: impl std::fmt::Display) -> LoadtestError {
    LoadtestError::Output(format!("plot: {e}"))
}

/// The sweep variable of each point (concurrency, or rate where rates were swept).
fn xs(reports: &[Report]) -> (String, Vec<f64>) {
    let by_rate = reports.iter().any(|r| r.config.request_rate.is_some_and(f64::is_finite)) && reports.windows(2).any(|w| w[0].config.request_rate != w[1].config.request_rate);
    if by_rate {
        ("request rate (req/s)".into(), reports.iter().map(|r| r.config.request_rate.unwrap_or(f64::NAN)).collect())
    } else {
        ("max concurrency".into(), reports.iter().map(|r| r.config.max_concurrency.map_or(r.peak_concurrency as f64, |c| c as f64)).collect())
    }
}

fn lines(path: &Path, title: &str, xlabel: &str, ylabel: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<(), LoadtestError> {
    let pts = || series.iter().flat_map(|(_, v)| v.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let xmax = pts().map(|p| p.0).fold(0.0, f64::max).max(1e-9) * 1.05;
    let ymax = pts().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root).caption(title, ("sans-serif", 22)).margin(15).x_label_area_size(40).y_label_area_size(60).build_cartesian_2d(0f64..xmax, 0f64..ymax).map_err(err)?;
    chart.configure_mesh().x_desc(xlabel).y_desc(ylabel).draw().map_err(err)?;
    for (i, (name, v)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let v: Vec<(f64, f64)> = v.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        chart.draw_series(LineSeries::new(v.clone(), color.stroke_width(2))).map_err(err)?.label(name.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        if v.len() <= 40 {
            chart.draw_series(v.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        }
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)
}

/// Write `throughput.svg`, `ttft.svg` and `itl.svg` (generation) or `e2e.svg` (scoring), and
/// `cdf.svg` (when per-request records were kept) into `dir`.
pub fn write_plots(dir: &Path, reports: &[Report]) -> Result<(), LoadtestError> {
    if reports.is_empty() {
        return Ok(());
    }
    let (xl, x) = xs(reports);
    let series = |name: &str, y: &dyn Fn(&Report) -> Option<f64>| (name.to_string(), reports.iter().zip(&x).filter_map(|(r, &x)| Some((x, y(r)?))).collect::<Vec<_>>());
    let scoring = reports.iter().any(|r| r.item_throughput.is_some());
    let tp = if scoring {
        vec![series("items/s", &|r| r.item_throughput), series("requests/s", &|r| Some(r.request_throughput))]
    } else {
        vec![series("output tok/s", &|r| Some(r.output_token_throughput)), series("total tok/s", &|r| Some(r.total_token_throughput))]
    };
    lines(&dir.join("throughput.svg"), "Throughput", &xl, "per second", &tp)?;
    if scoring {
        let e2e = [("E2E p50", (|s: &stats::Summary| s.median) as fn(&stats::Summary) -> f64), ("E2E p90", |s| s.p90), ("E2E p99", |s| s.p99)];
        let v: Vec<_> = e2e.iter().map(|(n, q)| series(n, &|r: &Report| r.latency.e2e_ms.map(|s| q(&s)))).collect();
        lines(&dir.join("e2e.svg"), "End-to-end latency", &xl, "ms", &v)?;
    } else {
        type Pick = fn(&Report) -> Option<stats::Summary>;
        for (file, title, name, pick) in [("ttft.svg", "Time to first token", "TTFT", (|r| r.latency.ttft_ms) as Pick), ("itl.svg", "Inter-token latency", "ITL", |r| r.latency.itl_ms)] {
            let v: Vec<_> = [("p50", (|s: &stats::Summary| s.median) as fn(&stats::Summary) -> f64), ("p90", |s| s.p90), ("p99", |s| s.p99)]
                .iter()
                .map(|(q, f)| series(&format!("{name} {q}"), &|r: &Report| pick(r).map(|s| f(&s))))
                .collect();
            lines(&dir.join(file), title, &xl, "ms", &v)?;
        }
    }
    let cdfs: Vec<(String, Vec<(f64, f64)>)> =
        reports.iter().filter(|r| !r.requests.is_empty()).map(|r| (format!("E2E {}", r.label), stats::cdf(&r.requests.iter().filter(|q| q.ok).map(|q| q.e2e_s * 1e3).collect::<Vec<_>>()))).collect();
    if !cdfs.is_empty() {
        lines(&dir.join("cdf.svg"), "End-to-end latency CDF", "ms", "fraction of requests", &cdfs)?;
    }
    Ok(())
}
