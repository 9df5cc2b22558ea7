//! `karen insights`: the operator's insight report, fetched from a running
//! server. Process-wide numbers (route and query latency, cache ratios,
//! provider errors) live in the serving process's memory, so the command
//! asks the server's `GET /v1/admin/insights` with an operator key rather
//! than reading the database (which holds only the usage part).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use karen::config::Config;
use serde_json::Value;

/// The environment variable holding the operator key.
pub const TOKEN_ENV: &str = "KAREN_OPERATOR_TOKEN";

#[derive(Args, Debug)]
pub struct InsightsArgs {
    /// Minutes or hours ending now, e.g. 15m or 1h (default: all the server keeps).
    #[arg(long)]
    window: Option<String>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The server's base URL (default: http:// + server.listen).
    #[arg(long, env = "KAREN_URL")]
    url: Option<String>,
}

/// The base URL of the configured listener (a wildcard address is reached on loopback).
fn default_url(config: &Config) -> String {
    let listen = config
        .server
        .listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("http://{listen}")
}

pub async fn run(config: &Config, args: InsightsArgs) -> anyhow::Result<ExitCode> {
    let token = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .with_context(|| {
            format!("set {TOKEN_ENV} to an operator key (karen operator-key create makes one)")
        })?;
    let base = args.url.unwrap_or_else(|| default_url(config));
    let mut url = format!("{}/v1/admin/insights", base.trim_end_matches('/'));
    if let Some(window) = &args.window {
        url.push_str("?window=");
        url.push_str(&window.replace(|c: char| !c.is_ascii_alphanumeric(), ""));
    }
    let reply = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .with_context(|| format!("asking {base} for insights (is `karen serve` running there?)"))?;
    let status = reply.status();
    let body: Value = reply
        .json()
        .await
        .with_context(|| format!("reading the reply of {url}"))?;
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or("no detail");
        anyhow::bail!("{url} answered {status}: {detail}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", render(&body));
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(value: &Value) -> String {
    format!("{:.0} ms", value.as_f64().unwrap_or(0.0) * 1000.0)
}

fn pct(value: &Value) -> String {
    format!("{:.1}%", value.as_f64().unwrap_or(0.0) * 100.0)
}

fn rows<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map_or(&[], Vec::as_slice)
}

/// The report as text for a terminal.
pub fn render(report: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Insights over the last {} min (at {})",
        report["window_minutes"],
        report["generated_at"].as_str().unwrap_or("?")
    );
    let process = &report["process"];
    if process.is_null() {
        let _ = writeln!(out, "\nNo process numbers: metrics are off on this server.");
    } else {
        let _ = writeln!(out, "\nSlowest routes (p50 / p95 / p99, requests, 5xx)");
        for r in rows(process, "slowest_routes") {
            let _ = writeln!(
                out,
                "  {:<7} {:<50} {:>8} {:>8} {:>8} {:>7} {:>5}",
                r["method"].as_str().unwrap_or(""),
                r["route"].as_str().unwrap_or(""),
                ms(&r["p50_seconds"]),
                ms(&r["p95_seconds"]),
                ms(&r["p99_seconds"]),
                r["requests"],
                r["status_5xx"]
            );
        }
        let _ = writeln!(out, "\nSlow queries (p95, statements)");
        for q in rows(process, "slow_queries") {
            let _ = writeln!(
                out,
                "  {:<10} {:>8} {:>9}",
                q["operation"].as_str().unwrap_or(""),
                ms(&q["p95_seconds"]),
                q["queries"]
            );
        }
        let _ = writeln!(out, "\nCaches (hit ratio, lookups)");
        for c in rows(process, "caches") {
            let _ = writeln!(
                out,
                "  {:<20} {:>7} {:>9}",
                c["cache"].as_str().unwrap_or(""),
                pct(&c["hit_ratio"]),
                c["lookups"]
            );
        }
        let _ = writeln!(out, "\nProviders (p50 / p95, calls, error rate)");
        for p in rows(process, "providers") {
            let _ = writeln!(
                out,
                "  {:<30} {:>8} {:>8} {:>7} {:>7}",
                format!(
                    "{}/{}",
                    p["provider"].as_str().unwrap_or(""),
                    p["model"].as_str().unwrap_or("")
                ),
                ms(&p["p50_seconds"]),
                ms(&p["p95_seconds"]),
                p["calls"],
                pct(&p["error_rate"])
            );
        }
        let _ = writeln!(out, "\nRejected requests (total, peak per minute)");
        for r in rows(process, "rejections") {
            let _ = writeln!(
                out,
                "  {:<22} {:>7} {:>7}",
                format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap_or(""),
                    r["scope"].as_str().unwrap_or("")
                ),
                r["rejected"],
                r["peak_per_minute"]
            );
        }
    }
    let _ = writeln!(
        out,
        "\nSpending by tenant and model (calls, cost in millionths)"
    );
    for t in rows(report, "usage") {
        let _ = writeln!(
            out,
            "  {} ({} calls, {})",
            t["slug"].as_str().unwrap_or(""),
            t["calls"],
            t["cost_micros"]
        );
        for m in rows(t, "models") {
            let _ = writeln!(
                out,
                "    {:<30} {:>7} {:>12} {:>7}",
                m["model"].as_str().unwrap_or(""),
                m["calls"],
                m["cost_micros"],
                pct(&m["cost_share"])
            );
        }
    }
    let recommendations = rows(report, "recommendations");
    let _ = writeln!(out, "\nRecommendations");
    if recommendations.is_empty() {
        let _ = writeln!(
            out,
            "  none: nothing crossed a threshold with enough samples"
        );
    }
    for r in recommendations {
        let _ = writeln!(
            out,
            "  [{}] {}",
            r["rule"].as_str().unwrap_or(""),
            r["message"].as_str().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_text_report_shows_each_section_and_the_recommendations() {
        let report = json!({
            "window_minutes": 15,
            "generated_at": "2026-12-02T10:00:00Z",
            "process": {
                "slowest_routes": [{"route": "/v1/x", "method": "GET", "requests": 120,
                    "p50_seconds": 0.1, "p95_seconds": 1.8, "p99_seconds": 2.4, "status_5xx": 3}],
                "slow_queries": [{"operation": "select", "queries": 500, "p95_seconds": 0.3}],
                "caches": [{"cache": "access", "hit_ratio": 0.12, "lookups": 5000}],
                "providers": [], "rejections": []
            },
            "usage": [{"slug": "acme", "calls": 40, "cost_micros": 1000,
                "models": [{"model": "big", "calls": 40, "cost_micros": 1000, "cost_share": 1.0}]}],
            "recommendations": [{"rule": "route_slo", "message": "GET /v1/x p95 1.8 s"}]
        });
        let text = render(&report);
        for expected in [
            "last 15 min",
            "/v1/x",
            "1800 ms",
            "select",
            "12.0%",
            "acme (40 calls, 1000)",
            "[route_slo] GET /v1/x p95 1.8 s",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        let quiet = render(
            &json!({"window_minutes": 60, "process": null, "usage": [], "recommendations": []}),
        );
        assert!(quiet.contains("metrics are off"));
        assert!(quiet.contains("none: nothing crossed a threshold"));
    }

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        let mut config = Config::default();
        config.server.listen = "0.0.0.0:9000".into();
        assert_eq!(default_url(&config), "http://127.0.0.1:9000");
    }
}
