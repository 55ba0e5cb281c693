//! The report's plots, as SVG (plotters): the latency CDF of hello per
//! system, hello throughput against concurrency, and memory per function.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::compare::systems::{
    Cell, NATIVE, REFERENCE, WASMBOX, WASMBOX_COMPONENT, WASMTIME_RUN, WASMTIME_RUN_EPOCH,
    WASMTIME_SERVE,
};
use crate::density::Density;

const SYSTEMS: [(&str, RGBColor); 7] = [
    (WASMBOX, RGBColor(0x1f, 0x77, 0xb4)),
    (WASMBOX_COMPONENT, RGBColor(0x17, 0xbe, 0xcf)),
    (WASMTIME_SERVE, RGBColor(0x2c, 0xa0, 0x2c)),
    (REFERENCE, RGBColor(0xd6, 0x27, 0x28)),
    (WASMTIME_RUN, RGBColor(0xff, 0x7f, 0x0e)),
    (WASMTIME_RUN_EPOCH, RGBColor(0x8c, 0x56, 0x4b)),
    (NATIVE, RGBColor(0x94, 0x67, 0xbd)),
];

type Plot = (String, PathBuf);

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e:?}")
}

pub(crate) fn draw(dir: &Path, cells: &[Cell], density: &Density) -> anyhow::Result<Vec<Plot>> {
    Ok(vec![
        latency_cdf(dir, cells)?,
        throughput(dir, cells)?,
        memory(dir, density)?,
    ])
}

type Chart<'a, X, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>;

/// The series legend, bottom right, on a translucent white box.
fn legend<X: Ranged, Y: Ranged>(chart: &mut Chart<'_, X, Y>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn latency_cdf(dir: &Path, cells: &[Cell]) -> anyhow::Result<Plot> {
    let title = "hello: latency CDF at concurrency 1".to_string();
    let path = dir.join("latency-cdf.svg");
    let series: Vec<_> = SYSTEMS
        .iter()
        .filter_map(|(s, color)| {
            let c = cells
                .iter()
                .find(|c| c.system == *s && c.function == "hello" && c.concurrency == 1)?;
            let pts: Vec<(f64, f64)> = c
                .result
                .latency
                .iter_quantiles(1)
                .map(|v| (v.value_iterated_to() as f64 / 1e3, v.quantile_iterated_to()))
                .collect();
            Some((*s, *color, pts))
        })
        .collect();
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|x| x.0))
        .fold((f64::MAX, 1.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let file = path.clone();
    let root = SVGBackend::new(&file, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo.max(1.0) * 0.8..hi * 1.25).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("fraction of requests")
        .draw()
        .map_err(err)?;
    for (name, color, pts) in series {
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok((title, path))
}

fn throughput(dir: &Path, cells: &[Cell]) -> anyhow::Result<Plot> {
    let title = "hello: requests/s against concurrency".to_string();
    let path = dir.join("throughput.svg");
    let hello: Vec<&Cell> = cells.iter().filter(|c| c.function == "hello").collect();
    let max = hello.iter().map(|c| c.result.rate).fold(1.0, f64::max);
    let min = hello
        .iter()
        .map(|c| c.result.rate)
        .fold(f64::MAX, f64::min)
        .max(0.1);
    let file = path.clone();
    let root = SVGBackend::new(&file, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            (0.8f64..80.0).log_scale(),
            (min * 0.5..max * 2.0).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log scale)")
        .y_desc("requests/s (log scale)")
        .draw()
        .map_err(err)?;
    for (name, color) in SYSTEMS {
        let mut pts: Vec<(f64, f64)> = hello
            .iter()
            .filter(|c| c.system == name)
            .map(|c| (c.concurrency as f64, c.result.rate))
            .collect();
        if pts.is_empty() {
            continue;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    legend(&mut chart)?;
    root.present().map_err(err)?;
    Ok((title, path))
}

fn memory(dir: &Path, d: &Density) -> anyhow::Result<Plot> {
    let title = "memory per function (MiB)".to_string();
    let path = dir.join("memory-per-function.svg");
    let mib = |b: f64| b / (1u64 << 20) as f64;
    let wasmbox = mib(d.all_loaded.mem.0 as f64 / d.functions as f64);
    let mut bars = vec![(
        format!("wasmbox, {} functions all loaded (RSS / N)", d.functions),
        wasmbox,
    )];
    if let Some((k, rss, pss)) = d.per_process {
        bars.push((
            "wasmtime serve per function (RSS)".into(),
            mib(rss as f64 / k as f64),
        ));
        bars.push((
            "wasmtime serve per function (PSS)".into(),
            mib(pss as f64 / k as f64),
        ));
    }
    let max = bars.iter().map(|b| b.1).fold(0.1, f64::max);
    let file = path.clone();
    let root = SVGBackend::new(&file, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..bars.len() as f64, 0f64..max * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("MiB per function")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let color = if i == 0 { SYSTEMS[0].1 } else { SYSTEMS[1].1 };
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
                color.filled(),
            )
        }))
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!("{v:.2}"),
                (i as f64 + 0.42, v + max * 0.03),
                ("sans-serif", 16),
            )
        }))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok((title, path))
}
