//! The embedding chain's decisions: scripted providers for the rules (with
//! virtual time), and real HTTP servers for the path a deployment takes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use karen_domain::ManualClock;

use crate::CircuitBreaker;
use serde_json::json;
use time::macros::datetime;

use super::*;
use crate::BreakerState;
use crate::test_upstream::{Reply, Upstream, echo_vector};

struct Scripted {
    name: &'static str,
    steps: Mutex<VecDeque<Result<f32, LlmError>>>,
    calls: AtomicUsize,
}

impl Scripted {
    /// Each call takes the next step: a vector `[value]` per input, or an error.
    fn new(name: &'static str, steps: Vec<Result<f32, LlmError>>) -> Arc<Self> {
        Arc::new(Self {
            name,
            steps: Mutex::new(steps.into()),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EmbeddingProvider for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, LlmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let step = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Err(LlmError::Connection("script exhausted".into())));
        let value = step?;
        Ok(Embeddings {
            model: model.to_owned(),
            vectors: vec![vec![value]; inputs.len()],
            prompt_tokens: 1,
            counted_locally: false,
        })
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)))
}

fn retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts_per_provider: attempts,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
    }
}

fn breaker(clock: &Arc<ManualClock>) -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(
        3,
        Duration::from_secs(60),
        clock.clone(),
    ))
}

fn chain(
    providers: &[&Arc<Scripted>],
    attempts: u32,
    clock: &Arc<ManualClock>,
) -> ResilientEmbeddings {
    let members = providers
        .iter()
        .map(|provider| {
            let provider: Arc<dyn EmbeddingProvider> = (*provider).clone();
            EmbeddingChainMember::new(provider, breaker(clock))
        })
        .collect();
    ResilientEmbeddings::new("embedding-chain", members, retry(attempts))
}

fn inputs() -> Vec<String> {
    vec!["one".into(), "two".into()]
}

#[tokio::test(start_paused = true)]
async fn the_first_success_is_returned_with_its_member() {
    let first = Scripted::new("first", vec![Ok(1.0)]);
    let second = Scripted::new("second", vec![Ok(2.0)]);
    let chain = chain(&[&first, &second], 2, &clock());
    let served = chain.embed_served("m", &inputs()).await.unwrap();
    assert_eq!(served.provider, "first");
    assert_eq!(served.embeddings.vectors, vec![vec![1.0], vec![1.0]]);
    assert_eq!(chain.name(), "embedding-chain");
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_then_fall_back() {
    let first = Scripted::new(
        "first",
        vec![Err(LlmError::Timeout), Err(LlmError::Timeout)],
    );
    let second = Scripted::new("second", vec![Ok(2.0)]);
    let chain = chain(&[&first, &second], 2, &clock());
    let served = chain.embed_served("m", &inputs()).await.unwrap();
    assert_eq!(served.provider, "second");
    assert_eq!((first.calls(), second.calls()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_for_within_the_limit() {
    let limited = LlmError::RateLimited {
        retry_after: Some(Duration::from_secs(1)),
    };
    let first = Scripted::new("first", vec![Err(limited), Ok(1.0)]);
    let chain = chain(&[&first], 2, &clock());
    let started = tokio::time::Instant::now();
    chain.embed("m", &inputs()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(first.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_long_retry_after_moves_on_at_once() {
    let limited = LlmError::RateLimited {
        retry_after: Some(Duration::from_secs(600)),
    };
    let first = Scripted::new("first", vec![Err(limited), Ok(1.0)]);
    let second = Scripted::new("second", vec![Ok(2.0)]);
    let chain = chain(&[&first, &second], 3, &clock());
    let started = tokio::time::Instant::now();
    let served = chain.embed_served("m", &inputs()).await.unwrap();
    assert_eq!(served.provider, "second");
    assert!(started.elapsed() < Duration::from_secs(600));
}

#[tokio::test(start_paused = true)]
async fn errors_another_attempt_cannot_fix_return_at_once() {
    let bad_request = LlmError::Upstream {
        status: 400,
        message: "model not found".into(),
    };
    let first = Scripted::new("first", vec![Err(bad_request.clone())]);
    let second = Scripted::new("second", vec![Ok(2.0)]);
    let chain = chain(&[&first, &second], 3, &clock());
    assert_eq!(chain.embed("m", &inputs()).await.unwrap_err(), bad_request);
    assert_eq!((first.calls(), second.calls()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn empty_inputs_are_refused_without_touching_a_member() {
    let first = Scripted::new("first", vec![Ok(1.0)]);
    let chain = chain(&[&first], 2, &clock());
    assert!(matches!(
        chain.embed("m", &[]).await,
        Err(LlmError::Refused(_))
    ));
    assert_eq!(first.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_skips_its_member_until_it_half_opens() {
    let clock = clock();
    let first = Scripted::new(
        "first",
        vec![
            Err(LlmError::Timeout),
            Err(LlmError::Timeout),
            Err(LlmError::Timeout),
            Ok(1.0),
        ],
    );
    let second = Scripted::new("second", vec![Ok(2.0), Ok(2.0)]);
    let chain = chain(&[&first, &second], 3, &clock);
    assert_eq!(
        chain.embed_served("m", &inputs()).await.unwrap().provider,
        "second"
    );
    assert_eq!(chain.members()[0].breaker.state(), BreakerState::Open);
    assert_eq!(
        chain.embed_served("m", &inputs()).await.unwrap().provider,
        "second"
    );
    assert_eq!(first.calls(), 3, "skipped while open");
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        chain.embed_served("m", &inputs()).await.unwrap().provider,
        "first"
    );
    assert_eq!(chain.members()[0].breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_lone_open_member_reports_circuit_open_and_an_empty_chain_refuses() {
    let clock = clock();
    let only = Scripted::new("only", (0..3).map(|_| Err(LlmError::Timeout)).collect());
    let chain = chain(&[&only], 3, &clock);
    assert_eq!(
        chain.embed("m", &inputs()).await.unwrap_err(),
        LlmError::Timeout
    );
    assert_eq!(
        chain.embed("m", &inputs()).await.unwrap_err(),
        LlmError::CircuitOpen {
            provider: "only".into()
        }
    );
    let empty = ResilientEmbeddings::new("empty", Vec::new(), RetryPolicy::default());
    assert!(matches!(
        empty.embed("m", &inputs()).await,
        Err(LlmError::Refused(_))
    ));
}

#[tokio::test]
async fn over_http_a_failing_upstream_falls_back_to_the_next() {
    let down = Upstream::start().await;
    down.script([
        Reply::Status(503, json!({"error": {"message": "overloaded"}}), None),
        Reply::Status(502, json!({"error": {"message": "bad gateway"}}), None),
    ]);
    let up = Upstream::start().await;
    let clock = clock();
    let members = vec![
        EmbeddingChainMember::new(Arc::new(down.client("replica-a", None)), breaker(&clock)),
        EmbeddingChainMember::new(Arc::new(up.client("replica-b", None)), breaker(&clock)),
    ];
    let chain = ResilientEmbeddings::new(
        "replicas",
        members,
        RetryPolicy {
            attempts_per_provider: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
    );
    let served = chain.embed_served("m", &inputs()).await.unwrap();
    assert_eq!(served.provider, "replica-b");
    assert_eq!(served.embeddings.vectors[1], echo_vector("two", 3));
    assert_eq!((down.received().len(), up.received().len()), (2, 1));
}

#[tokio::test]
async fn over_http_retry_after_is_honoured() {
    let upstream = Upstream::start().await;
    upstream.script([Reply::Status(
        429,
        json!({"error": "rate limited"}),
        Some("1"),
    )]);
    let members = vec![EmbeddingChainMember::new(
        Arc::new(upstream.client("only", None)),
        breaker(&clock()),
    )];
    let chain = ResilientEmbeddings::new("chain", members, retry(2));
    let started = std::time::Instant::now();
    chain.embed("m", &inputs()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(upstream.received().len(), 2);
}
