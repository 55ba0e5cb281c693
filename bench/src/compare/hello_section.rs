//! The report's section on hello over HTTP against its ceilings
//! (hello_http.rs measures it): every row, then the ratios read off them.

use std::fmt::Write as _;

use super::units::{fmt_us, us};
use crate::hello_http::{self as hh, HelloHttp};

pub(crate) fn write(r: &mut String, h: &HelloHttp) -> std::fmt::Result {
    let on = format!("isolation {}", h.mode);
    writeln!(r, "## hello over HTTP against its ceilings\n")?;
    writeln!(
        r,
        "Each row is one server process and closed-loop hyper clients (one keep-alive connection each) from this \
         harness on the same machine. \"isolation on\" is `--cpu-isolation {}` here. The bare hyper server \
         (`wasmbox-bench bare-hyper`, its own process) answers the same status, headers and body with no Wasm. \
         Requests carry the `cpu_quota` in the table. The rows of a ratio below (at c=16: isolation on / bare \
         hyper, and on / none with admission not binding) ran side by side, in {} alternating rounds; each such \
         row holds its rounds together, and the ratio is the median of the rounds' own.\n",
        h.mode,
        crate::scaling::ROUNDS
    )?;
    writeln!(
        r,
        "| server | c | cpu_quota | p50 / p99 | server p50 | req/s |\n|---|---|---|---|---|---|"
    )?;
    for row in &h.rows {
        let res = &row.result;
        let server = if res.server_total.is_empty() {
            "-".to_string()
        } else {
            fmt_us(us(res.server_total.value_at_quantile(0.5)))
        };
        writeln!(
            r,
            "| {} | {} | {} | {} / {} | {server} | {:.0} |",
            row.label.replace("isolation on", &on),
            row.concurrency,
            row.cpu_quota,
            fmt_us(us(res.latency.value_at_quantile(0.5))),
            fmt_us(us(res.latency.value_at_quantile(0.99))),
            res.rate
        )?;
    }
    let rate = |label: &str, c: usize| h.get(label, c, 1000).map(|x| x.rate);
    let mut ratios = Vec::new();
    for c in [1, 16] {
        for (what, label) in [(on.as_str(), hh::ISO_ON), ("none", hh::ISO_NONE)] {
            if let Some(p) = h.pair(label, hh::BARE, c, 1000) {
                ratios.push(format!(
                    "c={c}, wasmbox {what} / bare hyper: {:.2}x (the median of the rounds' ratios {})",
                    p.ratio(),
                    p.rounds_text()
                ));
            } else if let Some((a, b)) = rate(label, c).zip(rate(hh::BARE, c)) {
                // At c=16 the bare row holds its paired rounds together,
                // this one a window of its own: not one moment of the machine.
                let apart = if h.pair(hh::ISO_ON, hh::BARE, c, 1000).is_some() {
                    " (one window against bare hyper's rounds together)"
                } else {
                    ""
                };
                ratios.push(format!(
                    "c={c}, wasmbox {what} / bare hyper: {:.2}x{apart}",
                    a / b
                ));
            }
        }
        if let Some((two, one)) = rate(hh::ISO_ON, c).zip(rate(hh::ONE_CORE, c)) {
            ratios.push(format!(
                "c={c}, wasmbox {on} server on 2 cores / on 1 core: {:.2}x",
                two / one
            ));
        }
    }
    for quota in [1000, hh::HELD_QUOTA] {
        if let Some(p) = h.pair(hh::ON_NOT_BINDING, hh::NONE_NOT_BINDING, 16, quota) {
            ratios.push(format!(
                "c=16, admission not binding, `cpu_quota: {quota}`{}, wasmbox {on} / none: {:.2}x (the median of the rounds' ratios {})",
                if quota == hh::HELD_QUOTA {
                    " (each worker held in its cgroup; at 1000 it waits outside)"
                } else {
                    ""
                },
                p.ratio(),
                p.rounds_text()
            ));
        }
    }
    writeln!(r, "\nRatios (req/s, this run): {}.\n", ratios.join("; "))
}
