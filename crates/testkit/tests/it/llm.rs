//! karen-llm against the fake upstream: the OpenAI-compatible and Anthropic
//! clients over real HTTP, the SSRF policy, retries, fallback and circuit
//! breakers, cancellation, and the offline provider.

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

#[tokio::test]
async fn retry_after_is_honoured_then_the_retry_succeeds() {
    let fake = FakeLlm::start().await;
    fake.push(Behaviour::RateLimited {
        retry_after: Some("1".into()),
    });
    let (_clock, registry) = registry();
    let chain = ResilientChat::new(
        "chain",
        vec![ChainMember::new(named(&fake, "only"), registry.get("only"))],
        RetryPolicy {
            attempts_per_provider: 2,
            ..RetryPolicy::default()
        },
    );
    let started = tokio::time::Instant::now();
    let response = chain.complete(&request("fake-echo", "hi")).await.unwrap();
    assert_eq!(response.message.content.as_deref(), Some("You said: hi"));
    assert_eq!(fake.requests(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry waited for Retry-After"
    );
}

#[tokio::test]
async fn a_server_error_falls_back_to_the_second_provider() {
    let first = FakeLlm::start().await;
    let second = FakeLlm::start().await;
    first.push(Behaviour::Status(500));
    let error = openai(&first)
        .complete(&request("fake-echo", "hi"))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        LlmError::Upstream {
            status: 500,
            message: "fake upstream failure (500)".into()
        }
    );

    first.push(Behaviour::Status(500));
    let (_clock, registry) = registry();
    let chain = chain_over(
        vec![named(&first, "first"), named(&second, "second")],
        &registry,
    );
    let response = chain.complete(&request("fake-echo", "hi")).await.unwrap();
    assert_eq!(response.message.content.as_deref(), Some("You said: hi"));
    assert_eq!((first.requests(), second.requests()), (2, 1));
}

#[tokio::test]
async fn a_refused_connection_falls_back_to_the_second_provider() {
    let unreachable = refused_base_url().await;
    let error = openai_at(&unreachable, timeouts())
        .complete(&request("fake-echo", "hi"))
        .await
        .unwrap_err();
    assert!(matches!(error, LlmError::Connection(_)), "{error:?}");

    let fake = FakeLlm::start().await;
    let (_clock, registry) = registry();
    let down: Arc<dyn ChatProvider> = Arc::new(openai_at(&unreachable, timeouts()));
    let chain = chain_over(vec![down, named(&fake, "up")], &registry);
    let collected = collect(chain.stream(&request("fake-echo", "hi")).await.unwrap()).await;
    assert_eq!(collected.text, "You said: hi");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn an_open_breaker_sends_requests_straight_to_the_next_provider() {
    let failing = FakeLlm::start().await;
    let healthy = FakeLlm::start().await;
    let (clock, registry) = registry();
    let chain = chain_over(
        vec![named(&failing, "failing"), named(&healthy, "healthy")],
        &registry,
    );
    for _ in 0..2 {
        failing.push(Behaviour::Status(503));
        chain.complete(&request("fake-echo", "hi")).await.unwrap();
    }
    assert_eq!(registry.get("failing").state(), BreakerState::Open);
    assert_eq!(failing.requests(), 2);

    // Skipped while open: the request goes straight to the healthy provider.
    chain.complete(&request("fake-echo", "hi")).await.unwrap();
    assert_eq!((failing.requests(), healthy.requests()), (2, 3));

    // After the open period one probe goes through; its success closes the breaker.
    clock.advance(Duration::from_secs(60));
    chain.complete(&request("fake-echo", "hi")).await.unwrap();
    assert_eq!((failing.requests(), healthy.requests()), (3, 3));
    assert_eq!(registry.get("failing").state(), BreakerState::Closed);
}

#[tokio::test]
async fn the_outbound_policy_refuses_internal_destinations_unless_allowlisted() {
    let fake = FakeLlm::start().await;
    let strict = OutboundPolicy::default();
    let port = fake.address().port();
    for url in [
        fake.base_url(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]/v1".to_owned(),
        format!("http://localhost:{port}/v1"),
    ] {
        let config = ProviderConfig {
            name: "internal".into(),
            kind: ProviderKind::OpenAi,
            base_url: Some(url.clone()),
            api_key: Some(SecretString::from(KEY)),
            models: vec![],
        };
        match build_chat_provider(&config, &strict, &timeouts()) {
            Err(LlmError::Refused(reason)) => {
                assert!(reason.contains("allowlist"), "{url}: {reason}");
                assert!(!reason.contains(KEY));
            }
            Err(other) => panic!("{url}: expected a refusal, got {other:?}"),
            Ok(_) => panic!("{url} was accepted"),
        }
    }
    // Allowlisted, the same URL works.
    let config = ProviderConfig {
        name: "local".into(),
        kind: ProviderKind::OpenAi,
        base_url: Some(fake.base_url()),
        api_key: None,
        models: vec![],
    };
    let provider = build_chat_provider(&config, &policy(), &timeouts()).unwrap();
    provider
        .complete(&request("fake-echo", "hi"))
        .await
        .unwrap();
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_when_connecting() {
    // The URL check lets the name through (as it would a public name that
    // later re-resolves to an internal address); the client's resolver,
    // which runs for every connection, refuses it.
    let fake = FakeLlm::start().await;
    let port = fake.address().port();
    let url = format!("http://localhost:{port}/v1");
    let endpoint = Endpoint::parse(&url, &OutboundPolicy::new(["localhost"])).unwrap();
    let strict_client = http_client(&OutboundPolicy::default(), &timeouts()).unwrap();
    let provider = OpenAiCompatible::new("rebound", endpoint, None, strict_client, timeouts());
    match provider
        .complete(&request("fake-echo", "hi"))
        .await
        .unwrap_err()
    {
        LlmError::Refused(reason) => assert!(reason.contains("loopback"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(fake.requests(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn dropping_a_stream_cancels_the_upstream_request() {
    let fake = FakeLlm::start().await;
    fake.push(Behaviour::Chunked {
        chunks: 60,
        interval: Duration::from_millis(50),
    });
    let mut stream = openai(&fake)
        .stream(&request(
            "fake-echo",
            "a long answer please, as long as it gets",
        ))
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            stream.next().await,
            Some(Ok(ChatEvent::Delta { .. }))
        ));
    }
    drop(stream);
    assert!(
        fake.wait_for_cancelled_stream(Duration::from_secs(10))
            .await,
        "the fake saw the client go away"
    );
    assert_eq!(fake.streams_completed(), 0);
}

#[tokio::test]
async fn the_offline_provider_answers_only_from_context_and_says_what_it_is() {
    let config = ProviderConfig {
        name: "offline".into(),
        kind: ProviderKind::Offline,
        base_url: None,
        api_key: None,
        models: vec![],
    };
    let provider = build_chat_provider(&config, &OutboundPolicy::default(), &timeouts()).unwrap();
    assert_eq!(provider.models().await.unwrap(), vec![OFFLINE_MODEL_ID]);

    let empty = provider
        .complete(&request("any", "Where is my passport?"))
        .await
        .unwrap();
    let text = empty.message.content.unwrap();
    assert_eq!(empty.model, OFFLINE_MODEL_ID);
    assert!(text.contains("no stored memories or documents"), "{text}");
    assert!(text.contains("not a language model"), "{text}");
    assert!(text.contains("model provider"), "{text}");

    let mut ask = request("any", "Where is my passport?");
    ask.context = vec![
        ContextItem {
            source: "memory".into(),
            text: "Your passport is in the top drawer of the desk.".into(),
        },
        ContextItem {
            source: "Moving checklist.pdf".into(),
            text: "Passports and birth certificates go in the blue folder.".into(),
        },
    ];
    let answer = provider.complete(&ask).await.unwrap();
    let text = answer.message.content.clone().unwrap();
    assert!(
        text.starts_with("From what I have stored for you:"),
        "{text}"
    );
    assert!(
        text.contains("top drawer of the desk. (source: memory)"),
        "{text}"
    );
    assert!(text.contains("(source: Moving checklist.pdf)"), "{text}");
    assert!(!answer.usage.unwrap().reported);

    let streamed = collect(provider.stream(&ask).await.unwrap()).await;
    assert_eq!(streamed.text, text);
    assert!(streamed.deltas > 1);
    assert_eq!(
        streamed.finish.unwrap().2.as_deref(),
        Some(OFFLINE_MODEL_ID)
    );
}

#[tokio::test]
async fn anthropic_complete_maps_the_request_and_the_answer() {
    let fake = FakeLlm::start().await;
    let mut ask = request("claude-fake", "hello claude");
    ask.messages
        .insert(0, ChatMessage::text(ChatRole::System, "Be brief."));
    let response = anthropic(&fake).complete(&ask).await.unwrap();
    assert_eq!(
        response.message.content.as_deref(),
        Some("You said: hello claude")
    );
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
    assert_eq!(response.usage, reported(4, 4));
    assert_eq!(fake.last_header("x-api-key").as_deref(), Some(KEY));
    assert_eq!(
        fake.last_header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(fake.last_header("authorization"), None);
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 1024);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hello claude"}]}])
    );
    assert_eq!(
        anthropic(&fake).models().await.unwrap(),
        vec!["claude-fake"]
    );
}

#[tokio::test]
async fn anthropic_tool_use_whole_and_streamed() {
    let fake = FakeLlm::start().await;
    let mut ask = request("fake-tool", "Weather in Paris?");
    ask.tools = Some(weather_tools());
    let response = anthropic(&fake).complete(&ask).await.unwrap();
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["input_schema"],
        weather_tools()[0]["function"]["parameters"]
    );
    assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(response.message.tool_calls[0].id, "toolu_fake_1");
    assert_eq!(
        response.message.tool_calls[0].function.arguments,
        r#"{"city":"Paris"}"#
    );

    let collected = collect(anthropic(&fake).stream(&ask).await.unwrap()).await;
    assert_eq!(collected.error, None);
    assert_eq!(collected.text, "Let me look that up.");
    assert_eq!(collected.tool_calls[0].id.as_deref(), Some("toolu_fake_1"));
    let arguments: String = collected
        .tool_calls
        .iter()
        .filter_map(|delta| delta.arguments.clone())
        .collect();
    assert_eq!(arguments, r#"{"city":"Paris"}"#);
    let (finish_reason, usage, model) = collected.finish.unwrap();
    assert_eq!(finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(model.as_deref(), Some("fake-tool"));
    assert!(usage.unwrap().reported);
}

#[tokio::test]
async fn anthropic_errors_map_like_the_others() {
    let fake = FakeLlm::start().await;
    fake.push(Behaviour::RateLimited {
        retry_after: Some("3".into()),
    });
    let error = anthropic(&fake)
        .complete(&request("claude-fake", "hi"))
        .await
        .unwrap_err();
    assert_eq!(error, rate_limited(3));
    fake.push(Behaviour::Status(529));
    let error = anthropic(&fake)
        .stream(&request("claude-fake", "hi"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        error,
        LlmError::Upstream {
            status: 529,
            message: "fake upstream failure (529)".into()
        }
    );
    assert!(error.is_transient());
}

#[tokio::test]
async fn models_and_embeddings_come_from_the_upstream() {
    let fake = FakeLlm::start().await;
    let models = openai(&fake).models().await.unwrap();
    assert!(models.contains(&"fake-echo".to_owned()), "{models:?}");
    let inputs = vec!["first text".to_owned(), "second".to_owned()];
    let embeddings = openai(&fake).embed("fake-embed", &inputs).await.unwrap();
    assert_eq!(embeddings.model, "fake-embed");
    assert_eq!(
        embeddings.vectors,
        vec![fake_embedding("first text"), fake_embedding("second")]
    );
    assert_eq!(embeddings.prompt_tokens, 3);
    assert_eq!(fake.last_request().unwrap()["input"], json!(inputs));
}
