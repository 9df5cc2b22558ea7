//! The chain's decisions, against scripted providers standing in for the
//! network edge (each call takes the next scripted outcome).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use karen_domain::ManualClock;
use karen_domain::ports::{ChatEvent, ChatMessage, ChatRole};
use time::macros::datetime;

use super::*;
use crate::BreakerState;

/// What one scripted call does.
#[derive(Debug, Clone)]
enum Step {
    Answer(&'static str),
    Fail(LlmError),
    /// Streams: one delta, then this error.
    FailMidStream(LlmError),
}

struct Scripted {
    name: &'static str,
    steps: Mutex<VecDeque<Step>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(name: &'static str, steps: Vec<Step>) -> Arc<Self> {
        Arc::new(Self {
            name,
            steps: Mutex::new(steps.into()),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn next(&self) -> Step {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.steps
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Fail(LlmError::Connection("script exhausted".into())))
    }
}

fn answer(text: &str) -> ChatResponse {
    ChatResponse {
        provider: None,
        id: None,
        model: "scripted".into(),
        message: ChatMessage::text(ChatRole::Assistant, text),
        finish_reason: Some("stop".into()),
        usage: None,
    }
}

#[async_trait]
impl ChatProvider for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    async fn complete(&self, _request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        match self.next() {
            Step::Answer(text) => Ok(answer(text)),
            Step::Fail(error) | Step::FailMidStream(error) => Err(error),
        }
    }

    async fn stream(&self, _request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let delta = |text: &str| {
            Ok(ChatEvent::Delta {
                content: Some(text.into()),
                tool_calls: vec![],
            })
        };
        let events = match self.next() {
            Step::Answer(text) => vec![
                delta(text),
                Ok(ChatEvent::Finish {
                    provider: None,
                    finish_reason: Some("stop".into()),
                    usage: None,
                    model: None,
                }),
            ],
            // Fails on establishing (as an HTTP error status would).
            Step::Fail(error) => return Err(error),
            Step::FailMidStream(error) => vec![delta("partial"), Err(error)],
        };
        Ok(Box::pin(futures::stream::iter(events)))
    }

    async fn models(&self) -> Result<Vec<String>, LlmError> {
        Ok(vec![format!("{}-model", self.name), "shared".into()])
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

fn chain(providers: &[&Arc<Scripted>], attempts: u32, clock: &Arc<ManualClock>) -> ResilientChat {
    let members = providers
        .iter()
        .map(|provider| {
            let provider: Arc<dyn ChatProvider> = (*provider).clone();
            ChainMember::new(
                provider,
                Arc::new(CircuitBreaker::new(
                    3,
                    Duration::from_secs(60),
                    clock.clone(),
                )),
            )
        })
        .collect();
    ResilientChat::new("chain", members, retry(attempts))
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: vec![ChatMessage::text(ChatRole::User, "hi")],
        temperature: None,
        max_tokens: None,
        tools: None,
        tool_choice: None,
        stop: None,
        user: None,
        context: Vec::new(),
    }
}

fn text_of(response: &ChatResponse) -> &str {
    response.message.content.as_deref().unwrap()
}

#[tokio::test(start_paused = true)]
async fn first_success_is_returned() {
    let first = Scripted::new("first", vec![Step::Answer("one")]);
    let second = Scripted::new("second", vec![Step::Answer("two")]);
    let chain = chain(&[&first, &second], 2, &clock());
    assert_eq!(text_of(&chain.complete(&request()).await.unwrap()), "one");
    assert_eq!((first.calls(), second.calls()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_on_the_same_provider() {
    let first = Scripted::new(
        "first",
        vec![Step::Fail(LlmError::Timeout), Step::Answer("one")],
    );
    let second = Scripted::new("second", vec![Step::Answer("two")]);
    let chain = chain(&[&first, &second], 2, &clock());
    assert_eq!(text_of(&chain.complete(&request()).await.unwrap()), "one");
    assert_eq!((first.calls(), second.calls()), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_fall_back_to_the_next_provider() {
    let server_error = LlmError::Upstream {
        status: 503,
        message: "down".into(),
    };
    let first = Scripted::new(
        "first",
        vec![Step::Fail(server_error.clone()), Step::Fail(server_error)],
    );
    let second = Scripted::new("second", vec![Step::Answer("two")]);
    let chain = chain(&[&first, &second], 2, &clock());
    assert_eq!(text_of(&chain.complete(&request()).await.unwrap()), "two");
    assert_eq!((first.calls(), second.calls()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn non_transient_errors_return_at_once() {
    let bad_request = LlmError::Upstream {
        status: 400,
        message: "bad".into(),
    };
    let first = Scripted::new("first", vec![Step::Fail(bad_request.clone())]);
    let second = Scripted::new("second", vec![Step::Answer("two")]);
    let chain = chain(&[&first, &second], 3, &clock());
    assert_eq!(chain.complete(&request()).await.unwrap_err(), bad_request);
    assert_eq!((first.calls(), second.calls()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn retry_after_within_the_limit_is_waited_for() {
    let limited = LlmError::RateLimited {
        retry_after: Some(Duration::from_secs(1)),
    };
    let first = Scripted::new("first", vec![Step::Fail(limited), Step::Answer("one")]);
    let chain = chain(&[&first], 2, &clock());
    let started = tokio::time::Instant::now();
    assert_eq!(text_of(&chain.complete(&request()).await.unwrap()), "one");
    // Virtual time: the chain slept exactly as long as the upstream asked.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(first.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_limit_moves_to_the_next_provider_at_once() {
    let limited = LlmError::RateLimited {
        retry_after: Some(Duration::from_secs(600)),
    };
    let first = Scripted::new("first", vec![Step::Fail(limited), Step::Answer("one")]);
    let second = Scripted::new("second", vec![Step::Answer("two")]);
    let chain = chain(&[&first, &second], 3, &clock());
    let started = tokio::time::Instant::now();
    assert_eq!(text_of(&chain.complete(&request()).await.unwrap()), "two");
    assert!(started.elapsed() < Duration::from_secs(600));
    assert_eq!((first.calls(), second.calls()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn when_all_fail_the_last_error_is_returned() {
    let first = Scripted::new("first", vec![Step::Fail(LlmError::Timeout)]);
    let refused = LlmError::Connection("refused".into());
    let second = Scripted::new("second", vec![Step::Fail(refused.clone())]);
    let chain = chain(&[&first, &second], 1, &clock());
    assert_eq!(chain.complete(&request()).await.unwrap_err(), refused);
}

#[tokio::test(start_paused = true)]
async fn an_empty_chain_refuses() {
    let chain = ResilientChat::new("empty", Vec::new(), RetryPolicy::default());
    assert!(matches!(
        chain.complete(&request()).await,
        Err(LlmError::Refused(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_skips_its_provider() {
    let clock = clock();
    let failing: Vec<Step> = (0..3).map(|_| Step::Fail(LlmError::Timeout)).collect();
    let first = Scripted::new("first", failing);
    let second = Scripted::new("second", vec![Step::Answer("a"), Step::Answer("b")]);
    let chain = chain(&[&first, &second], 3, &clock);
    // Three transient failures: the first provider's breaker opens (threshold 3).
    assert_eq!(text_of(&chain.complete(&request()).await.unwrap()), "a");
    assert_eq!(chain.members[0].breaker.state(), BreakerState::Open);
    // The next request does not touch it.
    assert_eq!(text_of(&chain.complete(&request()).await.unwrap()), "b");
    assert_eq!((first.calls(), second.calls()), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn a_lone_open_provider_reports_circuit_open() {
    let clock = clock();
    let failing: Vec<Step> = (0..3).map(|_| Step::Fail(LlmError::Timeout)).collect();
    let only = Scripted::new("only", failing);
    let chain = chain(&[&only], 3, &clock);
    assert_eq!(
        chain.complete(&request()).await.unwrap_err(),
        LlmError::Timeout
    );
    assert_eq!(
        chain.complete(&request()).await.unwrap_err(),
        LlmError::CircuitOpen {
            provider: "only".into()
        }
    );
    assert_eq!(only.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn streams_fall_back_while_establishing() {
    let first = Scripted::new("first", vec![Step::Fail(LlmError::Timeout)]);
    let second = Scripted::new("second", vec![Step::Answer("two")]);
    let chain = chain(&[&first, &second], 1, &clock());
    let events: Vec<_> = chain.stream(&request()).await.unwrap().collect().await;
    assert_eq!(
        events[0],
        Ok(ChatEvent::Delta {
            content: Some("two".into()),
            tool_calls: vec![]
        })
    );
    assert!(matches!(events[1], Ok(ChatEvent::Finish { .. })));
}

#[tokio::test(start_paused = true)]
async fn stream_errors_after_the_first_event_pass_through() {
    let first = Scripted::new("first", vec![Step::FailMidStream(LlmError::Timeout)]);
    let second = Scripted::new("second", vec![Step::Answer("two")]);
    let chain = chain(&[&first, &second], 2, &clock());
    let events: Vec<_> = chain.stream(&request()).await.unwrap().collect().await;
    assert_eq!(
        events,
        vec![
            Ok(ChatEvent::Delta {
                content: Some("partial".into()),
                tool_calls: vec![]
            }),
            Err(LlmError::Timeout),
        ]
    );
    assert_eq!((first.calls(), second.calls()), (1, 0));
}

#[tokio::test]
async fn models_are_merged_without_repeats() {
    let first = Scripted::new("first", vec![]);
    let second = Scripted::new("second", vec![]);
    let chain = chain(&[&first, &second], 1, &clock());
    assert_eq!(
        chain.models().await.unwrap(),
        vec!["first-model", "shared", "second-model"]
    );
}

#[test]
fn backoff_is_bounded_by_the_exponential_ceiling_and_the_maximum() {
    let policy = retry(3);
    for _ in 0..200 {
        assert!(policy.backoff(0) <= Duration::from_millis(100));
        assert!(policy.backoff(2) <= Duration::from_millis(400));
        assert!(policy.backoff(40) <= Duration::from_secs(2));
    }
}
