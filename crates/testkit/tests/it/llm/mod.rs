//! karen-llm against the fake upstream: the OpenAI-compatible and Anthropic
//! clients over real HTTP, the SSRF policy, retries, fallback and circuit
//! breakers, cancellation, and the offline provider.

mod chains;
mod providers;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use karen_domain::ManualClock;
use karen_domain::ports::{
    ChatEvent, ChatMessage, ChatProvider, ChatRequest, ChatRole, ChatStream, ContextItem,
    EmbeddingProvider, LlmError, TokenUsage, ToolCallDelta,
};
use karen_llm::{
    Anthropic, BreakerRegistry, BreakerState, ChainMember, Endpoint, OFFLINE_MODEL_ID,
    OpenAiCompatible, OutboundPolicy, ProviderConfig, ProviderKind, ResilientChat, RetryPolicy,
    Timeouts, build_chat_provider, estimate_prompt_tokens, estimate_tokens, http_client,
};
use karen_testkit::fake_llm::{
    Behaviour, FakeLlm, echo_text, fake_embedding, fake_token_count, refused_base_url,
};
use secrecy::SecretString;
use serde_json::json;

const KEY: &str = "sk-test-key";

fn policy() -> OutboundPolicy {
    OutboundPolicy::new(["127.0.0.1"])
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(10),
        stream_idle: Duration::from_secs(10),
    }
}

fn short_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_millis(300),
        stream_idle: Duration::from_millis(300),
    }
}

fn openai_at(base_url: &str, timeouts: Timeouts) -> OpenAiCompatible {
    let policy = policy();
    let endpoint = Endpoint::parse(base_url, &policy).expect("allowlisted URL");
    let client = http_client(&policy, &timeouts).expect("client");
    OpenAiCompatible::new(
        "fake",
        endpoint,
        Some(SecretString::from(KEY)),
        client,
        timeouts,
    )
}

fn openai(fake: &FakeLlm) -> OpenAiCompatible {
    openai_at(&fake.base_url(), timeouts())
}

fn anthropic(fake: &FakeLlm) -> Anthropic {
    let policy = policy();
    let endpoint = Endpoint::parse(&fake.anthropic_base_url(), &policy).unwrap();
    Anthropic::new(
        "fake-anthropic",
        endpoint,
        SecretString::from(KEY),
        vec!["claude-fake".into()],
        http_client(&policy, &timeouts()).unwrap(),
        timeouts(),
    )
}

fn request(model: &str, question: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![ChatMessage::text(ChatRole::User, question)],
        temperature: None,
        max_tokens: None,
        tools: None,
        tool_choice: None,
        stop: None,
        user: None,
        context: Vec::new(),
    }
}

fn weather_tools() -> serde_json::Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"]
            }
        }
    }])
}

/// Usage as the upstream reported it.
fn reported(prompt_tokens: u32, completion_tokens: u32) -> Option<TokenUsage> {
    Some(TokenUsage {
        prompt_tokens,
        completion_tokens,
        reported: true,
    })
}

fn rate_limited(seconds: u64) -> LlmError {
    LlmError::RateLimited {
        retry_after: Some(Duration::from_secs(seconds)),
    }
}

/// Everything a stream produced.
#[derive(Debug, Default)]
struct Collected {
    text: String,
    deltas: usize,
    tool_calls: Vec<ToolCallDelta>,
    finish: Option<(Option<String>, Option<TokenUsage>, Option<String>)>,
    error: Option<LlmError>,
}

async fn collect(mut stream: ChatStream) -> Collected {
    let mut collected = Collected::default();
    while let Some(event) = stream.next().await {
        match event {
            Ok(ChatEvent::Delta {
                content,
                tool_calls,
            }) => {
                collected.deltas += 1;
                collected
                    .text
                    .push_str(content.as_deref().unwrap_or_default());
                collected.tool_calls.extend(tool_calls);
            }
            Ok(ChatEvent::Finish {
                finish_reason,
                usage,
                model,
                ..
            }) => collected.finish = Some((finish_reason, usage, model)),
            Err(error) => {
                collected.error = Some(error);
                break;
            }
        }
    }
    collected
}

fn chain_over(providers: Vec<Arc<dyn ChatProvider>>, registry: &BreakerRegistry) -> ResilientChat {
    let members = providers
        .into_iter()
        .map(|provider| {
            let breaker = registry.get(provider.name());
            ChainMember::new(provider, breaker)
        })
        .collect();
    let retry = RetryPolicy {
        attempts_per_provider: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
    };
    ResilientChat::new("chain", members, retry)
}

fn named(fake: &FakeLlm, name: &str) -> Arc<dyn ChatProvider> {
    let policy = policy();
    Arc::new(OpenAiCompatible::new(
        name,
        Endpoint::parse(&fake.base_url(), &policy).unwrap(),
        None,
        http_client(&policy, &timeouts()).unwrap(),
        timeouts(),
    ))
}

fn registry() -> (Arc<ManualClock>, BreakerRegistry) {
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-01-01 0:00 UTC),
    ));
    let registry = BreakerRegistry::new(2, Duration::from_secs(60), clock.clone());
    (clock, registry)
}

#[tokio::test]
async fn complete_returns_the_answer_with_reported_usage() {
    let fake = FakeLlm::start().await;
    let response = openai(&fake)
        .complete(&request("fake-echo", "hello there"))
        .await
        .unwrap();
    assert_eq!(
        response.message.content.as_deref(),
        Some("You said: hello there")
    );
    assert_eq!(response.message.role, ChatRole::Assistant);
    assert_eq!(response.model, "fake-echo");
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
    assert_eq!(response.usage, reported(2, 4));
    assert_eq!(
        fake.last_header("authorization").as_deref(),
        Some("Bearer sk-test-key")
    );
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["model"], "fake-echo");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "hello there"}])
    );
    assert!(sent.get("stream").is_none());
}

#[tokio::test]
async fn stream_yields_the_chunks_and_the_usage_of_the_last_chunk() {
    let fake = FakeLlm::start().await;
    fake.push(Behaviour::Chunked {
        chunks: 4,
        interval: Duration::ZERO,
    });
    let stream = openai(&fake)
        .stream(&request("fake-echo", "stream this please"))
        .await
        .unwrap();
    let collected = collect(stream).await;
    assert_eq!(collected.error, None);
    assert_eq!(collected.text, echo_text("stream this please"));
    assert_eq!(collected.deltas, 4);
    let (finish_reason, usage, model) = collected.finish.expect("a finish event");
    assert_eq!(finish_reason.as_deref(), Some("stop"));
    assert_eq!(model.as_deref(), Some("fake-echo"));
    assert_eq!(
        usage,
        reported(3, fake_token_count(&echo_text("stream this please")))
    );
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn tools_pass_through_and_tool_calls_come_back() {
    let fake = FakeLlm::start().await;
    let mut ask = request("fake-tool", "Weather in Paris?");
    ask.tools = Some(weather_tools());
    ask.tool_choice = Some(json!("auto"));
    let response = openai(&fake).complete(&ask).await.unwrap();
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["tools"], weather_tools());
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        response.message.content.as_deref(),
        Some("Let me look that up.")
    );
    let call = &response.message.tool_calls[0];
    assert_eq!(call.id, "call_fake_1");
    assert_eq!(call.kind, "function");
    assert_eq!(call.function.name, "get_weather");
    assert_eq!(call.function.arguments, r#"{"city":"Paris"}"#);

    // The tool's result goes back up in OpenAI's shape.
    let mut follow_up = ask.clone();
    follow_up.messages.push(response.message.clone());
    follow_up.messages.push(ChatMessage {
        role: ChatRole::Tool,
        content: Some("18 °C".into()),
        tool_calls: vec![],
        tool_call_id: Some("call_fake_1".into()),
        name: None,
    });
    follow_up.model = "fake-echo".into();
    openai(&fake).complete(&follow_up).await.unwrap();
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "content": "18 °C", "tool_call_id": "call_fake_1"})
    );
}

#[tokio::test]
async fn streamed_tool_calls_arrive_in_fragments() {
    let fake = FakeLlm::start().await;
    let mut ask = request("fake-tool", "Weather in Paris?");
    ask.tools = Some(weather_tools());
    let collected = collect(openai(&fake).stream(&ask).await.unwrap()).await;
    assert_eq!(collected.error, None);
    assert_eq!(collected.text, "Let me look that up.");
    let first = &collected.tool_calls[0];
    assert_eq!(first.id.as_deref(), Some("call_fake_1"));
    assert_eq!(first.name.as_deref(), Some("get_weather"));
    assert!(
        collected.tool_calls.len() > 2,
        "the arguments come in pieces"
    );
    let arguments: String = collected
        .tool_calls
        .iter()
        .filter_map(|delta| delta.arguments.clone())
        .collect();
    assert_eq!(arguments, r#"{"city":"Paris"}"#);
    assert!(collected.tool_calls.iter().all(|delta| delta.index == 0));
    let (finish_reason, _, _) = collected.finish.unwrap();
    assert_eq!(finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(fake.last_request().unwrap()["tools"], weather_tools());
}

#[tokio::test]
async fn usage_is_counted_locally_when_the_upstream_reports_none() {
    let fake = FakeLlm::start().await;
    let ask = request("fake-no-usage", "count these words for me");
    let expected = TokenUsage {
        prompt_tokens: estimate_prompt_tokens(&ask.messages),
        completion_tokens: estimate_tokens(&echo_text("count these words for me")),
        reported: false,
    };
    let response = openai(&fake).complete(&ask).await.unwrap();
    assert_eq!(response.usage, Some(expected));
    let collected = collect(openai(&fake).stream(&ask).await.unwrap()).await;
    assert_eq!(collected.text, echo_text("count these words for me"));
    assert_eq!(collected.finish.unwrap().1, Some(expected));
}

#[tokio::test]
async fn malformed_json_is_an_invalid_response() {
    let fake = FakeLlm::start().await;
    let error = openai(&fake)
        .complete(&request("fake-malformed-json", "hi"))
        .await
        .unwrap_err();
    assert!(matches!(error, LlmError::InvalidResponse(_)), "{error:?}");
    assert!(!error.is_transient());
    let collected = collect(
        openai(&fake)
            .stream(&request("fake-malformed-json", "hi"))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        matches!(collected.error, Some(LlmError::InvalidResponse(_))),
        "{collected:?}"
    );
}

#[tokio::test]
async fn malformed_sse_is_an_invalid_response_after_the_good_part() {
    let fake = FakeLlm::start().await;
    let ask = request("fake-malformed-sse", "hi");
    let openai = openai(&fake).stream(&ask).await.unwrap();
    let anthropic = anthropic(&fake).stream(&ask).await.unwrap();
    for collected in [collect(openai).await, collect(anthropic).await] {
        assert!(
            !collected.text.is_empty(),
            "the good part arrived: {collected:?}"
        );
        assert!(echo_text("hi").starts_with(&collected.text));
        assert!(
            matches!(collected.error, Some(LlmError::InvalidResponse(_))),
            "{collected:?}"
        );
        assert_eq!(collected.finish, None);
    }
}

#[tokio::test]
async fn slow_upstreams_time_out() {
    let fake = FakeLlm::start().await;
    let provider = openai_at(&fake.base_url(), short_timeouts());
    fake.push(Behaviour::Slow(Duration::from_secs(3)));
    let error = provider
        .complete(&request("fake-echo", "hi"))
        .await
        .unwrap_err();
    assert_eq!(error, LlmError::Timeout);

    // A stream whose headers do not come in time.
    fake.push(Behaviour::Slow(Duration::from_secs(3)));
    let error = provider.stream(&request("fake-echo", "hi")).await.err();
    assert_eq!(error, Some(LlmError::Timeout));

    // A stream that goes silent between events (patient for headers, not for silence).
    let provider = openai_at(
        &fake.base_url(),
        Timeouts {
            stream_idle: Duration::from_secs(1),
            ..timeouts()
        },
    );
    fake.push(Behaviour::Chunked {
        chunks: 3,
        interval: Duration::from_secs(5),
    });
    let collected = collect(provider.stream(&request("fake-echo", "hi")).await.unwrap()).await;
    assert_eq!(collected.error, Some(LlmError::Timeout));
    assert!(
        collected.deltas >= 1,
        "the first chunk arrived before the silence"
    );
}

#[tokio::test]
async fn rate_limits_report_retry_after_in_seconds_and_as_a_date() {
    let fake = FakeLlm::start().await;
    fake.push(Behaviour::RateLimited {
        retry_after: Some("7".into()),
    });
    let error = openai(&fake)
        .complete(&request("fake-echo", "hi"))
        .await
        .unwrap_err();
    assert_eq!(error, rate_limited(7));
    // An HTTP date is measured against the fake's own `Date` header.
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = karen_domain::Clock::now(&karen_domain::SystemClock) + Duration::from_secs(30);
    fake.push(Behaviour::RateLimited {
        retry_after: Some(at.format(&format).unwrap()),
    });
    match openai(&fake)
        .complete(&request("fake-echo", "hi"))
        .await
        .unwrap_err()
    {
        LlmError::RateLimited {
            retry_after: Some(after),
        } => assert!((28..=31).contains(&after.as_secs()), "{after:?}"),
        other => panic!("expected a rate limit, got {other:?}"),
    }
}
