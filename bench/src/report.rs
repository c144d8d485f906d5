//! Result files (`bench/results/<scenario>.json`) and `bench/RESULTS.md`,
//! regenerated from whichever result files exist, plus the fan-out sweep
//! chart (`bench/results/fanout-sweep.svg`, hand-written SVG).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

use crate::Ctx;

pub fn results_dir() -> PathBuf {
    crate::bench_dir().join("results")
}

/// Writes one scenario's figures with the machine, command and versions.
pub fn write_scenario(name: &str, ctx: &Ctx, args: &[String], results: Value) -> PathBuf {
    let doc = serde_json::json!({
        "scenario": name,
        "mode": if ctx.quick { "quick" } else { "full" },
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "machine": crate::sys::machine(),
        "command": std::iter::once("quire-bench".to_owned())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>(),
        "versions": crate::servers::versions(&ctx.env),
        "quire_flags_added_by_the_bench": ctx.env.quire_limit_args,
        "quire_extra_args_from_env": std::env::var("QUIRE_BENCH_EXTRA_ARGS").ok(),
        "results": results,
    });
    let dir = results_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("cannot write {}: {e}", path.display());
    }
    path
}

fn load(name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(results_dir().join(format!("{name}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

// ---- small helpers over JSON values ----

fn f(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path).and_then(Value::as_f64)
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn num(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(x) if x.is_finite() => {
            if x.abs() >= 10_000.0 || (digits == 0 && x.abs() >= 1000.0) {
                group(x.round() as i64)
            } else {
                format!("{x:.digits$}")
            }
        }
        _ => "–".to_owned(),
    }
}

fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.abs() > 1e-12 && a.is_finite() => {
            let r = a / b;
            if r >= 100.0 {
                format!("{r:.0}×")
            } else if r >= 10.0 {
                format!("{r:.1}×")
            } else {
                format!("{r:.2}×")
            }
        }
        _ => "–".to_owned(),
    }
}

fn by_kind<'a>(runs: &'a [Value], kind: &str) -> Option<&'a Value> {
    runs.iter().find(|r| s(r, "/kind") == kind)
}

fn runs_of<'a>(doc: &'a Value, path: &str) -> &'a [Value] {
    doc.pointer(path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A table row: metric, then Quire, reference, Quire/reference, bare, Quire/bare.
fn row3(out: &mut String, label: &str, q: Option<f64>, r: Option<f64>, b: Option<f64>, d: usize) {
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {} | {} | {} |",
        num(q, d),
        num(r, d),
        ratio(q, r),
        num(b, d),
        ratio(q, b)
    );
}

const HEAD3: &str = "| | Quire | y-websocket-server | Quire ÷ ref | bare broadcast | Quire ÷ bare |\n|---|---:|---:|---:|---:|---:|\n";

fn header(out: &mut String, doc: &Value) {
    let _ = writeln!(
        out,
        "_Mode: **{}**; command: `{}`; `{}`; HEAD when written {}{}{}{}._\n",
        s(doc, "/mode"),
        doc.pointer("/command")
            .and_then(Value::as_array)
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default(),
        s(doc, "/versions/quire"),
        s(doc, "/versions/git_commit"),
        if doc.pointer("/versions/server_sources_modified_since_commit") == Some(&Value::Bool(true))
        {
            " (+ uncommitted server changes)"
        } else {
            ""
        },
        match doc
            .pointer("/versions/measured_server_commit")
            .and_then(Value::as_str)
        {
            Some(measured) => format!("; **the `quire` binary measured: {measured}**"),
            None if doc.pointer("/versions/quire_binary_older_than_last_server_commit")
                == Some(&Value::Bool(true)) =>
            {
                "; **the `quire` binary is older than the last server commit**".to_owned()
            }
            None => String::new(),
        },
        match doc
            .pointer("/quire_extra_args_from_env")
            .and_then(Value::as_str)
        {
            Some(extra) => format!("; **extra Quire flags: `{extra}`**"),
            None => String::new(),
        }
    );
}

/// Where Quire stands against one target.
struct Target {
    text: &'static str,
    measured: String,
    met: Option<bool>,
}

pub fn regenerate() -> Result<PathBuf, String> {
    let mut out = String::new();
    let mut targets = Vec::new();
    let docs: Vec<(&str, Option<Value>)> = crate::SCENARIOS.iter().map(|n| (*n, load(n))).collect();
    let any = docs.iter().find_map(|(_, d)| d.as_ref());

    out.push_str("# Quire benchmark results\n\n");
    out.push_str(
        "Generated by `quire-bench` (`cargo run --release -p quire-bench -- [SCENARIO...] [--quick]`), \
         which also writes the raw figures to `bench/results/<scenario>.json`. Do not edit by hand: \
         `quire-bench --report-only` rewrites this file from those files.\n\n",
    );
    if let Some(doc) = any {
        let _ = writeln!(
            out,
            "**All figures come from this {}-core machine** ({}, {} MiB of memory, Linux {}), which is shared \
             with other work: the load generator, the server under test and everything else run on the same \
             two cores. Each measurement waits (up to 10 s) for the machine to be quiet, runs at nice −10 (children too), and \
             records the CPU everything else used meanwhile (\"other CPU\"). Versions: Quire at {}, yrs {}, \
             tokio-tungstenite {}; node {}, @y/websocket-server {}, yjs {}, y-leveldb {}, leveldown {}.\n",
            f(doc, "/machine/nproc").unwrap_or(0.0),
            s(doc, "/machine/cpu_model"),
            f(doc, "/machine/mem_total_mib").unwrap_or(0.0),
            s(doc, "/machine/kernel"),
            s(doc, "/versions/git_commit"),
            s(doc, "/versions/yrs"),
            s(doc, "/versions/tokio_tungstenite"),
            s(doc, "/versions/node"),
            s(doc, "/versions/y_websocket_server"),
            s(doc, "/versions/yjs"),
            s(doc, "/versions/y_leveldb"),
            s(doc, "/versions/leveldown"),
        );
    }
    out.push_str(METHOD);

    let mut sections = String::new();
    for (name, doc) in &docs {
        let Some(doc) = doc else {
            let _ = writeln!(
                sections,
                "## {name}\n\nNot run yet (`quire-bench {name}`).\n"
            );
            continue;
        };
        match *name {
            "fanout" => fanout(&mut sections, doc, &mut targets),
            "idle" => idle(&mut sections, doc, &mut targets),
            "traces" => traces(&mut sections, doc, &mut targets),
            "coldload" => coldload(&mut sections, doc, &mut targets),
            "durability" => durability(&mut sections, doc),
            _ => {}
        }
    }

    out.push_str("## Targets from the issue\n\n| target | measured | met |\n|---|---|---|\n");
    for t in &targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            t.text,
            t.measured,
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            }
        );
    }
    out.push('\n');
    // Hand-written analysis (profiles, reasons for misses), kept beside the figures.
    if let Ok(notes) = std::fs::read_to_string(results_dir().join("notes.md")) {
        out.push_str(&notes);
        out.push('\n');
    }
    out.push_str(&sections);
    out.push_str(NOTES);

    let path = crate::bench_dir().join("RESULTS.md");
    std::fs::write(&path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

const METHOD: &str = "\
Servers, started fresh for every measurement and interleaved (Quire, then the reference, then the bare \
server, for each load): **Quire** (`quire serve`, release build, default settings except where a scenario \
says, with its per-IP connection cap and per-connection rate limits lifted since every client comes from \
127.0.0.1), the **Yjs reference server** `@y/websocket-server` 0.1.1 (the last release on yjs 13) on node \
with its leveldb persistence on (`YPERSISTENCE`) in every scenario, since Quire always persists, and a \
**bare broadcast server** (tokio-tungstenite, no CRDT, no storage: the loopback limit). Server CPU is \
user + system time from `/proc/<pid>/stat` over the measured span, memory is `VmRSS` / `VmHWM` from \
`/proc/<pid>/status`. Clients are stock y-websocket clients (no `quire.v1`) except in `durability`. \
Ratios are Quire ÷ peer: below 1 is better for Quire in latency, CPU and memory, above 1 in throughput.\n\n";

const NOTES: &str = "\
## How to read these figures, and what they do not show

- One machine with two cores runs the load generator and the server: at high rates they compete, so \
  saturation points are those of *this pair*, not of the server alone; the load generator reports its own \
  CPU (\"harness CPU\") and everything else's (\"other CPU\").
- The reference server's leveldb writes are not synced (`fsync`) per update: it persists every update to \
  the OS, not durably to the disk. Quire acknowledges nothing as saved before its group commit's flush.
- Fan-out writers insert at the head of the text and do not integrate each other's edits (they only count \
  them); every reader checks every writer's sequence numbers (exactly once) from the text the server relays.
- The concurrent trace's agents wait, before each edit, for the other agent's edits that the edit's \
  `parents` reach, so servers see a causally ordered session; the merged result equals the trace's \
  `endContent`.
";

fn fanout(out: &mut String, doc: &Value, targets: &mut Vec<Target>) {
    out.push_str("## fanout\n\n");
    header(out, doc);
    let base = runs_of(doc, "/results/base");
    if let Some(first) = base.first() {
        let _ = writeln!(
            out,
            "R = {} rooms × C = {} clients, W = {} writers per room at {} edits/s each, {} s; every other client \
             of the room must receive every edit exactly once.\n",
            num(f(first, "/load/rooms"), 0),
            num(f(first, "/load/clients"), 0),
            num(f(first, "/load/writers"), 0),
            num(f(first, "/load/rate"), 0),
            num(f(first, "/load/seconds"), 0),
        );
    }
    out.push_str(HEAD3);
    let q = by_kind(base, "quire");
    let r = by_kind(base, "reference");
    let b = by_kind(base, "bare");
    let get = |v: Option<&Value>, p: &str| v.and_then(|v| f(v, p));
    let mib = |v: Option<&Value>, p: &str| get(v, p).map(|k| k / 1024.0);
    row3(
        out,
        "deliveries/s",
        get(q, "/deliveries_per_s"),
        get(r, "/deliveries_per_s"),
        get(b, "/deliveries_per_s"),
        0,
    );
    row3(
        out,
        "latency p50 (ms)",
        get(q, "/latency/p50_ms"),
        get(r, "/latency/p50_ms"),
        get(b, "/latency/p50_ms"),
        2,
    );
    row3(
        out,
        "latency p90 (ms)",
        get(q, "/latency/p90_ms"),
        get(r, "/latency/p90_ms"),
        get(b, "/latency/p90_ms"),
        2,
    );
    row3(
        out,
        "latency p99 (ms)",
        get(q, "/latency/p99_ms"),
        get(r, "/latency/p99_ms"),
        get(b, "/latency/p99_ms"),
        2,
    );
    row3(
        out,
        "latency max (ms)",
        get(q, "/latency/max_ms"),
        get(r, "/latency/max_ms"),
        get(b, "/latency/max_ms"),
        2,
    );
    row3(
        out,
        "lost",
        get(q, "/lost"),
        get(r, "/lost"),
        get(b, "/lost"),
        0,
    );
    row3(
        out,
        "duplicated",
        get(q, "/duplicated"),
        get(r, "/duplicated"),
        get(b, "/duplicated"),
        0,
    );
    row3(
        out,
        "server CPU (% of a core)",
        get(q, "/usage/cpu_pct"),
        get(r, "/usage/cpu_pct"),
        get(b, "/usage/cpu_pct"),
        1,
    );
    row3(
        out,
        "server CPU per delivery (µs)",
        get(q, "/server_cpu_us_per_delivery"),
        get(r, "/server_cpu_us_per_delivery"),
        get(b, "/server_cpu_us_per_delivery"),
        1,
    );
    row3(
        out,
        "server peak RSS (MiB)",
        mib(q, "/usage/hwm_kib"),
        mib(r, "/usage/hwm_kib"),
        mib(b, "/usage/hwm_kib"),
        1,
    );
    row3(
        out,
        "harness CPU (%)",
        get(q, "/usage/harness_cpu_pct"),
        get(r, "/usage/harness_cpu_pct"),
        get(b, "/usage/harness_cpu_pct"),
        1,
    );
    row3(
        out,
        "other CPU (%)",
        get(q, "/usage/background_cpu_pct"),
        get(r, "/usage/background_cpu_pct"),
        get(b, "/usage/background_cpu_pct"),
        1,
    );
    out.push('\n');
    let qp = get(q, "/latency/p99_ms");
    let rp = get(r, "/latency/p99_ms");
    targets.push(Target {
        text: "fan-out p99 ≤ ¼ of the reference's at equal load",
        measured: format!("{} ms vs {} ms ({})", num(qp, 2), num(rp, 2), ratio(qp, rp)),
        met: qp.zip(rp).map(|(q, r)| q <= r / 4.0),
    });

    // The sweep.
    let sweep = runs_of(doc, "/results/sweep");
    let limit = f(doc, "/results/p99_limit_ms").unwrap_or(50.0);
    if let Some(first) = sweep.first() {
        let _ = writeln!(
            out,
            "### Sweep\n\n{} rooms × {} clients, {} writers per room; the rate per writer doubles until a server's \
             p99 passes {limit} ms (or it loses, duplicates or falls behind), then one step between. \
             Saturation = the highest deliveries/s a server kept up with.\n",
            num(f(first, "/load/rooms"), 0),
            num(f(first, "/load/clients"), 0),
            num(f(first, "/load/writers"), 0),
        );
    }
    out.push_str("| edits/s per writer | offered deliveries/s | Quire p99 (ms) | reference p99 (ms) | bare p99 (ms) | Quire CPU % | reference CPU % | bare CPU % | harness CPU % (Quire run) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut rates: Vec<f64> = sweep.iter().filter_map(|r| f(r, "/load/rate")).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    for rate in &rates {
        let at = |kind: &str| {
            sweep
                .iter()
                .find(|r| s(r, "/kind") == kind && f(r, "/load/rate") == Some(*rate))
        };
        let cell = |v: Option<&Value>| match v {
            None => "–".to_owned(),
            Some(v) => {
                let p = num(f(v, "/latency/p99_ms"), 1);
                if v.pointer("/kept_up") == Some(&Value::Bool(true)) {
                    p
                } else {
                    format!("{p} ✗")
                }
            }
        };
        let offered = sweep
            .iter()
            .find(|r| f(r, "/load/rate") == Some(*rate))
            .map(|r| {
                f(r, "/load/rooms").unwrap_or(0.0)
                    * f(r, "/load/writers").unwrap_or(0.0)
                    * (f(r, "/load/clients").unwrap_or(1.0) - 1.0)
                    * rate
            });
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(Some(*rate), 0),
            num(offered, 0),
            cell(at("quire")),
            cell(at("reference")),
            cell(at("bare")),
            num(at("quire").and_then(|v| f(v, "/usage/cpu_pct")), 0),
            num(at("reference").and_then(|v| f(v, "/usage/cpu_pct")), 0),
            num(at("bare").and_then(|v| f(v, "/usage/cpu_pct")), 0),
            num(at("quire").and_then(|v| f(v, "/usage/harness_cpu_pct")), 0),
        );
    }
    let sat = |kind: &str| {
        doc.pointer("/results/saturation")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|p| p.get(0).and_then(Value::as_str) == Some(kind))
            })
            .and_then(|p| p.get(1))
            .and_then(Value::as_f64)
    };
    let (sq, sr, sb) = (sat("quire"), sat("reference"), sat("bare"));
    let _ = writeln!(
        out,
        "\n✗ = did not keep up. **Saturation (deliveries/s kept up with): Quire {}, reference {} ({} of it), bare {} ({} of it).**\n",
        num(sq, 0),
        num(sr, 0),
        ratio(sq, sr),
        num(sb, 0),
        ratio(sq, sb)
    );
    let svg = sweep_svg(sweep, limit);
    if std::fs::write(results_dir().join("fanout-sweep.svg"), svg).is_ok() {
        out.push_str(
            "![p99 latency against delivered messages per second](results/fanout-sweep.svg)\n\n",
        );
    }
    targets.push(Target {
        text: "saturation ≥ 5× the reference's",
        measured: format!(
            "{} vs {} deliveries/s ({})",
            num(sq, 0),
            num(sr, 0),
            ratio(sq, sr)
        ),
        met: sq
            .zip(sr)
            .filter(|(_, r)| *r > 0.0)
            .map(|(q, r)| q >= 5.0 * r),
    });
    targets.push(Target {
        text: "saturation ≥ ½ of the bare broadcast server's",
        measured: format!(
            "{} vs {} deliveries/s ({})",
            num(sq, 0),
            num(sb, 0),
            ratio(sq, sb)
        ),
        met: sq
            .zip(sb)
            .filter(|(_, b)| *b > 0.0)
            .map(|(q, b)| q >= 0.5 * b),
    });
}

/// p99 latency (log) against delivered msgs/s (log), one line per server.
fn sweep_svg(sweep: &[Value], limit_ms: f64) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 70.0, 170.0, 30.0, 50.0);
    let series = [
        ("quire", "Quire", "#1f77b4"),
        ("reference", "y-websocket-server", "#d62728"),
        ("bare", "bare broadcast", "#7f7f7f"),
    ];
    let points: Vec<(f64, f64, &str)> = sweep
        .iter()
        .filter_map(|r| {
            Some((
                f(r, "/deliveries_per_s")?.max(1.0),
                f(r, "/latency/p99_ms")?.max(0.01),
                s(r, "/kind"),
            ))
        })
        .collect();
    let x_min = points.iter().map(|p| p.0).fold(f64::MAX, f64::min).min(1e3);
    let x_max = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1e4);
    let (lx0, lx1) = (x_min.log10().floor(), x_max.log10().ceil());
    let y_max = points.iter().map(|p| p.1).fold(limit_ms, f64::max);
    let (ly0, ly1) = (-1.0f64, y_max.log10().ceil().max(2.0));
    let px = |x: f64| left + (x.log10() - lx0) / (lx1 - lx0) * (w - left - right);
    let py = |y: f64| top + (ly1 - y.log10()) / (ly1 - ly0) * (h - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">fan-out sweep: p99 delivery latency vs delivered messages/s</text>\n",
        (left + w - right) / 2.0
    );
    for e in (lx0 as i32)..=(lx1 as i32) {
        let x = px(10f64.powi(e));
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            h - bottom,
            h - bottom + 16.0,
            group(10i64.pow(e.max(0) as u32))
        );
    }
    for e in (ly0 as i32)..=(ly1 as i32) {
        let y = py(10f64.powi(e));
        let label = if e < 0 {
            "0.1".to_owned()
        } else {
            group(10i64.pow(e as u32))
        };
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            w - right,
            left - 6.0,
            y + 4.0
        );
    }
    let ly = py(limit_ms);
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{ly:.1}\" x2=\"{}\" y2=\"{ly:.1}\" stroke=\"#ff7f0e\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\" fill=\"#ff7f0e\">p99 limit {limit_ms} ms</text>",
        w - right,
        w - right + 6.0,
        ly + 4.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">delivered messages per second (log)</text>\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">p99 latency, ms (log)</text>",
        (left + w - right) / 2.0,
        h - 12.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    for (i, (kind, label, color)) in series.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.2 == *kind)
            .map(|p| (p.0, p.1))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(x, y) in &pts {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                px(x),
                py(y)
            );
        }
        let legend_y = top + 20.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{}\" y1=\"{legend_y}\" x2=\"{}\" y2=\"{legend_y}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{label}</text>",
            w - right + 6.0,
            w - right + 26.0,
            w - right + 30.0,
            legend_y + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn idle(out: &mut String, doc: &Value, targets: &mut Vec<Target>) {
    out.push_str("## idle\n\n");
    header(out, doc);
    let runs = runs_of(doc, "/results/runs");
    if let Some(first) = runs.first() {
        let _ = writeln!(
            out,
            "{} stock y-websocket clients across {} rooms, connected and synced, then {} s of nothing but \
             heartbeats (Quire: WebSocket pings every 25 s, its default `--ping-interval`; reference: every \
             30 s; bare: every 25 s; tungstenite answers them).\n",
            num(f(first, "/clients"), 0),
            num(f(first, "/rooms"), 0),
            num(f(first, "/window_s"), 0),
        );
    }
    out.push_str(HEAD3);
    let q = by_kind(runs, "quire");
    let r = by_kind(runs, "reference");
    let b = by_kind(runs, "bare");
    let get = |v: Option<&Value>, p: &str| v.and_then(|v| f(v, p));
    let mib = |v: Option<&Value>, p: &str| get(v, p).map(|k| k / 1024.0);
    let kib = |v: Option<&Value>, p: &str| get(v, p).map(|k| k / 1024.0);
    row3(
        out,
        "clients connected",
        get(q, "/connected"),
        get(r, "/connected"),
        get(b, "/connected"),
        0,
    );
    row3(
        out,
        "RSS before (MiB)",
        mib(q, "/rss_before_kib"),
        mib(r, "/rss_before_kib"),
        mib(b, "/rss_before_kib"),
        1,
    );
    row3(
        out,
        "RSS connected (MiB)",
        mib(q, "/rss_connected_kib"),
        mib(r, "/rss_connected_kib"),
        mib(b, "/rss_connected_kib"),
        1,
    );
    row3(
        out,
        "RSS per connection (KiB)",
        kib(q, "/rss_per_conn_bytes"),
        kib(r, "/rss_per_conn_bytes"),
        kib(b, "/rss_per_conn_bytes"),
        2,
    );
    row3(
        out,
        "CPU per idle second (ms)",
        get(q, "/cpu_ms_per_s"),
        get(r, "/cpu_ms_per_s"),
        get(b, "/cpu_ms_per_s"),
        2,
    );
    row3(
        out,
        "pings answered in the window",
        get(q, "/pings"),
        get(r, "/pings"),
        get(b, "/pings"),
        0,
    );
    row3(
        out,
        "disconnects in the window",
        get(q, "/disconnects"),
        get(r, "/disconnects"),
        get(b, "/disconnects"),
        0,
    );
    row3(
        out,
        "time to connect all (s)",
        get(q, "/connect_s"),
        get(r, "/connect_s"),
        get(b, "/connect_s"),
        1,
    );
    row3(
        out,
        "other CPU (%)",
        get(q, "/usage/background_cpu_pct"),
        get(r, "/usage/background_cpu_pct"),
        get(b, "/usage/background_cpu_pct"),
        1,
    );
    out.push('\n');
    let per = get(q, "/rss_per_conn_bytes");
    let clients = get(q, "/clients");
    targets.push(Target {
        text: "idle ≤ 8 KB RSS per connection at 10k",
        measured: format!(
            "{} KiB per connection at {} connections (reference {} KiB)",
            num(per.map(|b| b / 1024.0), 2),
            num(clients, 0),
            num(get(r, "/rss_per_conn_bytes").map(|b| b / 1024.0), 2)
        ),
        met: per.map(|b| b <= 8.0 * 1024.0 && clients.unwrap_or(0.0) >= 10_000.0),
    });
}

fn traces(out: &mut String, doc: &Value, targets: &mut Vec<Target>) {
    out.push_str("## traces\n\n");
    header(out, doc);
    out.push_str(
        "Each trace replayed through the server as one update per edit (sequential traces: one writer, one \
         reader, at most 256 updates ahead of the reader; friendsforever: its 2 agents as 2 clients, causally \
         ordered). End-to-end = first send to last receipt. CPU per update includes one settling second for \
         background persistence. Stored = `du` of the data folder after the room was evicted, loaded by a \
         fresh client and the server shut down cleanly.\n\n",
    );
    let infos = runs_of(doc, "/results/traces");
    let runs = runs_of(doc, "/results/runs");
    out.push_str("| trace | updates | | Quire | y-websocket-server | Quire ÷ ref | bare broadcast | Quire ÷ bare |\n|---|---:|---|---:|---:|---:|---:|---:|\n");
    let mut worst_cpu_ratio: Option<f64> = None;
    let mut cpu_cells = Vec::new();
    for info in infos {
        let name = s(info, "/name");
        let of = |kind: &str| {
            runs.iter()
                .find(|r| s(r, "/trace") == name && s(r, "/kind") == kind)
        };
        let (q, r, b) = (of("quire"), of("reference"), of("bare"));
        let get = |v: Option<&Value>, p: &str| v.and_then(|v| f(v, p));
        let updates = num(f(info, "/updates"), 0);
        let mut line = |label: &str, p: &str, scale: f64, d: usize| {
            let (qv, rv, bv) = (
                get(q, p).map(|x| x * scale),
                get(r, p).map(|x| x * scale),
                get(b, p).map(|x| x * scale),
            );
            let _ = writeln!(
                out,
                "| {name} | {updates} | {label} | {} | {} | {} | {} | {} |",
                num(qv, d),
                num(rv, d),
                ratio(qv, rv),
                num(bv, d),
                ratio(qv, bv)
            );
        };
        line("end-to-end (s)", "/e2e_s", 1.0, 2);
        line("updates/s", "/updates_per_s", 1.0, 0);
        line(
            "server CPU per update (µs)",
            "/server_cpu_us_per_update",
            1.0,
            1,
        );
        line(
            "stored after compaction (KiB)",
            "/stored_bytes",
            1.0 / 1024.0,
            0,
        );
        let check = |v: Option<&Value>| match v {
            None => "–".to_owned(),
            Some(v) => {
                let fresh = match v.pointer("/fresh_client_matches") {
                    Some(Value::Bool(true)) => "fresh client = endContent",
                    Some(Value::Bool(false)) => "**fresh client differs**",
                    _ => "no document kept",
                };
                let receivers = if v.pointer("/receivers_match") == Some(&Value::Bool(true)) {
                    "receivers ok"
                } else {
                    "**receivers differ**"
                };
                match v.pointer("/error").and_then(Value::as_str) {
                    Some(e) => format!("error: {e}"),
                    None => format!("{fresh}; {receivers}"),
                }
            }
        };
        let _ = writeln!(
            out,
            "| {name} | {updates} | verified | {} | {} | | {} | |",
            check(q),
            check(r),
            check(b)
        );
        let (qc, rc) = (
            get(q, "/server_cpu_us_per_update"),
            get(r, "/server_cpu_us_per_update"),
        );
        if let (Some(qc), Some(rc)) = (qc, rc) {
            let x = rc / qc.max(1e-9);
            worst_cpu_ratio = Some(worst_cpu_ratio.map_or(x, |w: f64| w.min(x)));
            cpu_cells.push(format!("{name} {x:.1}×"));
        }
    }
    out.push('\n');
    if infos
        .iter()
        .any(|i| i.pointer("/replay_matches_end_content") == Some(&Value::Bool(false)))
    {
        out.push_str("_Quick mode replays a prefix of each trace; the expected text is the local replay of that prefix._\n\n");
    }
    targets.push(Target {
        text: "traces: ≥ 5× less server CPU per update than the reference, persisting every update durably",
        measured: if cpu_cells.is_empty() {
            "–".into()
        } else {
            format!("reference ÷ Quire: {}", cpu_cells.join(", "))
        },
        met: worst_cpu_ratio.map(|w| w >= 5.0),
    });
}

fn coldload(out: &mut String, doc: &Value, targets: &mut Vec<Target>) {
    out.push_str("## coldload\n\n");
    header(out, doc);
    let runs = runs_of(doc, "/results/runs");
    if let Some(first) = runs.first() {
        let _ = writeln!(
            out,
            "{} documents each holding the {} automerge-paper history ({} bytes as one Yjs update, {} \
             characters of text) are stored, the server restarts, and a fresh client measures connect → synced \
             (text complete): cold = a document nobody opened since the restart, warm = the same document while \
             open. Then every document is opened and closed, two at a time, with a 200 ms room grace (Quire) so \
             each is evicted soon after; the reference evicts on the last close.\n",
            num(f(first, "/documents"), 0),
            if doc.pointer("/results/whole_trace") == Some(&Value::Bool(false)) {
                "first 60,000 edits of the"
            } else {
                "whole"
            },
            num(f(first, "/state_bytes"), 0),
            num(f(doc, "/results/final_len"), 0),
        );
    }
    out.push_str("| | Quire | y-websocket-server | Quire ÷ ref |\n|---|---:|---:|---:|\n");
    let q = by_kind(runs, "quire");
    let r = by_kind(runs, "reference");
    let get = |v: Option<&Value>, p: &str| v.and_then(|v| f(v, p));
    let mut line = |label: &str, p: &str, scale: f64, d: usize| {
        let (qv, rv) = (get(q, p).map(|x| x * scale), get(r, p).map(|x| x * scale));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            num(qv, d),
            num(rv, d),
            ratio(qv, rv)
        );
    };
    line(
        "first cold load after restart (ms)",
        "/first_cold_ms",
        1.0,
        1,
    );
    line("cold load p50 (ms)", "/cold/p50_ms", 1.0, 1);
    line("cold load max (ms)", "/cold/max_ms", 1.0, 1);
    line("warm sync p50 (ms)", "/warm/p50_ms", 1.0, 1);
    line("server CPU per load (ms)", "/cpu_ms_per_load", 1.0, 1);
    line(
        "RSS after restart (MiB)",
        "/rss_before_kib",
        1.0 / 1024.0,
        1,
    );
    line("peak RSS loading all (MiB)", "/hwm_kib", 1.0 / 1024.0, 1);
    line(
        "RSS after all evicted (MiB)",
        "/rss_after_kib",
        1.0 / 1024.0,
        1,
    );
    line("time to load all (s)", "/load_all_s", 1.0, 1);
    line("data folder (MiB)", "/disk_bytes", 1.0 / 1024.0 / 1024.0, 1);
    out.push('\n');
    for run in runs {
        if let Some(e) = run.pointer("/error").and_then(Value::as_str) {
            let _ = writeln!(out, "**{} reported an error:** {e}\n", s(run, "/kind"));
        }
    }
    let p50 = get(q, "/cold/p50_ms");
    targets.push(Target {
        text: "cold load of automerge-paper ≤ 50 ms",
        measured: format!(
            "p50 {} ms, first after restart {} ms, max {} ms (reference p50 {} ms)",
            num(p50, 1),
            num(get(q, "/first_cold_ms"), 1),
            num(get(q, "/cold/max_ms"), 1),
            num(get(r, "/cold/p50_ms"), 1)
        ),
        met: p50.map(|p| p <= 50.0),
    });
}

fn durability(out: &mut String, doc: &Value) {
    out.push_str("## durability\n\n");
    header(out, doc);
    out.push_str(
        "Updates per second acknowledged as saved (`quire.v1` `Saved`, sent after the flush that made them \
         durable), Quire with its default 2 ms commit window (peer: `--commit-window 0ms`). `0ms` skips the \
         wait but still batches: writes that arrive while a flush runs join the next flush (see \
         `storage/src/sled_store.rs`), so it is not one flush per update; \"writes per flush\" shows what was \
         measured. The reference server has no save acknowledgement (and does not fsync), so it has no column.\n\n",
    );
    out.push_str(
        "| workload | | 2 ms window | 0 ms window | 2 ms ÷ 0 ms |\n|---|---|---:|---:|---:|\n",
    );
    let runs = runs_of(doc, "/results/runs");
    for workload in ["serial", "parallel"] {
        let of = |w: &str| {
            runs.iter()
                .find(|r| s(r, "/workload") == workload && s(r, "/commit_window").starts_with(w))
        };
        let (a, b) = (of("2ms"), of("0ms"));
        let label = match a.or(b) {
            Some(r) => format!(
                "{workload} ({} client{}, ≤ {} unacknowledged each)",
                num(f(r, "/clients"), 0),
                if f(r, "/clients") == Some(1.0) {
                    ""
                } else {
                    "s"
                },
                num(f(r, "/window"), 0)
            ),
            None => workload.to_owned(),
        };
        let get = |v: Option<&Value>, p: &str| v.and_then(|v| f(v, p));
        let mut line = |name: &str, p: &str, d: usize| {
            let (x, y) = (get(a, p), get(b, p));
            let _ = writeln!(
                out,
                "| {label} | {name} | {} | {} | {} |",
                num(x, d),
                num(y, d),
                ratio(x, y)
            );
        };
        line("saved updates/s", "/acked_per_s", 0);
        line("ack latency p50 (ms)", "/ack_latency/p50_ms", 2);
        line("ack latency p99 (ms)", "/ack_latency/p99_ms", 2);
        line("server CPU per update (µs)", "/server_cpu_us_per_update", 1);
        line("writes per flush (from /metrics)", "/writes_per_flush", 1);
        line("mean flush time (ms)", "/flush_ms_mean", 2);
    }
    out.push('\n');
}
