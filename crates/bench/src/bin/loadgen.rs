//! A small load generator: sends the same request at a fixed rate (open loop:
//! a late answer never delays the next send) or as fast as N connections
//! allow, and prints throughput and latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use karen_bench::percentile;
use tokio::sync::Mutex;

/// Load generator for Karen's benchmarks.
#[derive(Parser, Debug)]
struct Args {
    /// Target URL.
    url: String,
    /// Requests per second (0: as fast as `--connections` allow).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Concurrent connections (closed loop) or the cap of requests in flight (open loop).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds to measure (after a 2 s warm-up).
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Request body (JSON); POST when set, GET otherwise.
    #[arg(long)]
    body: Option<String>,
    /// Bearer token.
    #[arg(long)]
    token: Option<String>,
    /// A label printed with the result.
    #[arg(long, default_value = "run")]
    label: String,
}

struct Results {
    latencies_us: Vec<u64>,
    errors: u64,
}

fn request(client: &reqwest::Client, args: &Args) -> reqwest::RequestBuilder {
    let builder = match &args.body {
        Some(body) => client
            .post(&args.url)
            .header("content-type", "application/json")
            .body(body.clone()),
        None => client.get(&args.url),
    };
    match &args.token {
        Some(token) => builder.bearer_auth(token),
        None => builder,
    }
}

async fn one(client: &reqwest::Client, args: &Args) -> Result<Duration, ()> {
    let started = Instant::now();
    let response = request(client, args).send().await.map_err(drop)?;
    let ok = response.status().is_success();
    response.bytes().await.map_err(drop)?;
    if ok { Ok(started.elapsed()) } else { Err(()) }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let results = Arc::new(Mutex::new(Results {
        latencies_us: Vec::new(),
        errors: 0,
    }));
    let warmup_end = Instant::now() + Duration::from_secs(2);
    let end = warmup_end + Duration::from_secs(args.seconds);
    let permits = Arc::new(tokio::sync::Semaphore::new(args.connections));
    let record = move |results: Arc<Mutex<Results>>, outcome: Result<Duration, ()>, at: Instant| async move {
        if at < warmup_end {
            return;
        }
        let mut results = results.lock().await;
        match outcome {
            Ok(latency) => results
                .latencies_us
                .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)),
            Err(()) => results.errors += 1,
        }
    };
    if let Some(nanos) = 1_000_000_000u64.checked_div(args.rate) {
        let interval = Duration::from_nanos(nanos);
        let mut next = Instant::now();
        let mut tasks = Vec::new();
        while Instant::now() < end {
            next += interval;
            tokio::time::sleep_until(next.into()).await;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // More than `connections` in flight: count as an error (the server fell behind).
                let mut results = results.lock().await;
                if Instant::now() >= warmup_end {
                    results.errors += 1;
                }
                continue;
            };
            let (client, args, results) = (client.clone(), args.clone(), results.clone());
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let outcome = one(&client, &args).await;
                record(results, outcome, sent).await;
                drop(permit);
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    } else {
        let mut workers = Vec::new();
        for _ in 0..args.connections {
            let (client, args, results) = (client.clone(), args.clone(), results.clone());
            workers.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let sent = Instant::now();
                    let outcome = one(&client, &args).await;
                    record(results.clone(), outcome, sent).await;
                }
            }));
        }
        for worker in workers {
            let _ = worker.await;
        }
    }
    let mut results = results.lock().await;
    results.latencies_us.sort_unstable();
    let n = results.latencies_us.len();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{}: {} ok, {} errors, {:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        args.label,
        n,
        results.errors,
        n as f64 / args.seconds as f64,
        ms(percentile(&results.latencies_us, 50.0)),
        ms(percentile(&results.latencies_us, 90.0)),
        ms(percentile(&results.latencies_us, 99.0)),
        ms(results.latencies_us.last().copied().unwrap_or(0)),
    );
    Ok(())
}
