//! The latency chart: warm p50, p90 and p99 against concurrency, service (solid) and echo
//! ceiling (dashed), as a self-contained SVG; both axes logarithmic.

use std::fmt::Write as _;

use crate::scenarios::Figures;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// A percentile drawn: its name, where to read it, its colour.
struct Series {
    name: &'static str,
    value: fn(&Figures) -> f64,
    colour: &'static str,
}

const SERIES: [Series; 3] = [
    Series {
        name: "p50",
        value: |f| f.p50_ms,
        colour: "#1f77b4",
    },
    Series {
        name: "p90",
        value: |f| f.p90_ms,
        colour: "#ff7f0e",
    },
    Series {
        name: "p99",
        value: |f| f.p99_ms,
        colour: "#d62728",
    },
];

/// The chart of `service` against `echo`, one point per concurrency level.
pub fn latency_svg(service: &[Figures], echo: &[Figures]) -> String {
    let all = service.iter().chain(echo);
    let max_concurrency = all.clone().map(|f| f.concurrency).max().unwrap_or(1).max(2);
    let latencies = all
        .flat_map(|f| SERIES.iter().map(move |series| (series.value)(f)))
        .filter(|ms| *ms > 0.0);
    let (low, high) = latencies.fold((f64::MAX, f64::MIN), |(lo, hi), ms| {
        (lo.min(ms), hi.max(ms))
    });
    let (low, high) = if low <= high {
        (low, high)
    } else {
        (0.1, 10.0)
    };
    // Whole decades around the data, so the ticks read 0.1, 1, 10 ms.
    let y_min = 10f64.powf(low.log10().floor());
    let y_max = 10f64.powf(high.log10().ceil()).max(y_min * 10.0);
    let x_max = (max_concurrency as f64).log2().ceil().exp2();

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |c: f64| LEFT + plot_w * c.max(1.0).log2() / x_max.log2();
    let y = |ms: f64| {
        let t = (ms.max(y_min).log10() - y_min.log10()) / (y_max.log10() - y_min.log10());
        TOP + plot_h * (1.0 - t)
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">Warm StreamActivationRecords latency against concurrency</text>"#,
        LEFT + plot_w / 2.0
    );

    // Grid and ticks: powers of two on x, 1-2-5 steps of each decade on y.
    let mut c = 1.0;
    while c <= x_max {
        let px = x(c);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{c}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
        c *= 2.0;
    }
    let mut decade = y_min;
    while decade < y_max * 1.001 {
        for step in [1.0, 2.0, 5.0] {
            let ms = decade * step;
            if ms > y_max * 1.001 {
                break;
            }
            let py = y(ms);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 8.0,
                py + 4.0,
                format_ms(ms)
            );
        }
        decade *= 10.0;
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">concurrency (concurrent calls, log scale)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 16.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">latency, ms (log scale)</text>"#,
        TOP + plot_h / 2.0
    );

    // The lines: solid for the service, dashed for the echo ceiling.
    for (figures, dash, who) in [
        (service, "", "service"),
        (echo, r#" stroke-dasharray="6 4""#, "echo"),
    ] {
        for Series {
            name,
            value,
            colour,
        } in SERIES
        {
            let points: Vec<String> = figures
                .iter()
                .map(|f| format!("{:.1},{:.1}", x(f.concurrency as f64), y(value(f))))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"><title>{who} {name}</title></polyline>"#,
                points.join(" ")
            );
        }
    }

    // Legend.
    let legend_x = LEFT + plot_w + 20.0;
    let mut legend_y = TOP + 10.0;
    for (dash, who) in [
        ("", "service"),
        (r#" stroke-dasharray="6 4""#, "echo ceiling"),
    ] {
        for Series { name, colour, .. } in SERIES {
            let _ = writeln!(
                svg,
                r#"<line x1="{legend_x}" y1="{legend_y}" x2="{:.1}" y2="{legend_y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{who} {name}</text>"#,
                legend_x + 30.0,
                legend_x + 38.0,
                legend_y + 4.0
            );
            legend_y += 20.0;
        }
        legend_y += 10.0;
    }
    svg.push_str("</svg>\n");
    svg
}

/// A tick label: `0.1`, `2`, `50`, `1000`.
fn format_ms(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        let text = format!("{ms:.4}");
        text.trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(concurrency: usize, p50_ms: f64) -> Figures {
        Figures {
            concurrency,
            requests: 100,
            seconds: 1.0,
            neurons: 0,
            records: 1000,
            response_bytes: 1_000_000,
            requests_per_second: 100.0,
            neurons_per_second: 0.0,
            records_per_second: 1000.0,
            megabytes_per_second: 1.0,
            p50_ms,
            p90_ms: p50_ms * 2.0,
            p99_ms: p50_ms * 4.0,
        }
    }

    #[test]
    fn chart_has_a_solid_and_a_dashed_line_per_percentile() {
        let service: Vec<_> = [1, 16, 64, 256].map(|c| figures(c, 0.2 * c as f64)).into();
        let echo: Vec<_> = [1, 16, 64, 256].map(|c| figures(c, 0.1 * c as f64)).into();
        let svg = latency_svg(&service, &echo);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert_eq!(svg.matches(r#"stroke-dasharray="6 4" points="#).count(), 3);
        // Log x axis: 1 at the left edge, 256 at the right one.
        assert!(svg.contains(&format!(r#"points="{LEFT:.1},"#)));
        assert!(svg.contains(">256</text>"));
        assert!(svg.contains(">0.1</text>") && svg.contains(">100</text>"));
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(format_ms(0.05), "0.05");
        assert_eq!(format_ms(0.1), "0.1");
        assert_eq!(format_ms(20.0), "20");
    }
}
