use karen_domain::ports::ToolCallDelta;

use super::*;

fn event(data: &str) -> Event {
    Event {
        event: "message".into(),
        data: data.into(),
        id: String::new(),
        retry: None,
    }
}

fn decoder() -> OpenAiDecoder {
    OpenAiDecoder {
        requested_model: "asked".into(),
        prompt_estimate: 11,
        ..OpenAiDecoder::default()
    }
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "asked".into(),
        messages: vec![ChatMessage::text(ChatRole::User, "hello there")],
        temperature: None,
        max_tokens: None,
        tools: None,
        tool_choice: None,
        stop: None,
        user: None,
        context: Vec::new(),
    }
}

#[test]
fn text_chunks_then_usage_then_done() {
    let mut decoder = decoder();
    let first = decoder
        .decode(&event(
            r#"{"model":"m-1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        ))
        .unwrap();
    assert!(
        first.events.is_empty(),
        "an empty role-only delta is not an event"
    );
    let second = decoder
        .decode(&event(
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
        ))
        .unwrap();
    assert_eq!(
        second.events,
        vec![ChatEvent::Delta {
            content: Some("Hi".into()),
            tool_calls: vec![]
        }]
    );
    decoder
        .decode(&event(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ))
        .unwrap();
    decoder
        .decode(&event(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
        ))
        .unwrap();
    let done = decoder.decode(&event("[DONE]")).unwrap();
    assert!(done.finished);
    assert_eq!(
        done.events,
        vec![ChatEvent::Finish {
            provider: None,
            finish_reason: Some("stop".into()),
            usage: Some(TokenUsage {
                prompt_tokens: 5,
                completion_tokens: 1,
                reported: true
            }),
            model: Some("m-1".into()),
        }]
    );
}

#[test]
fn usage_is_counted_locally_when_not_reported() {
    let mut decoder = decoder();
    decoder
        .decode(&event(
            r#"{"choices":[{"index":0,"delta":{"content":"one two three"},
                "finish_reason":"stop"}]}"#,
        ))
        .unwrap();
    let events = decoder.end_of_body().unwrap();
    assert_eq!(
        events,
        vec![ChatEvent::Finish {
            provider: None,
            finish_reason: Some("stop".into()),
            usage: Some(TokenUsage {
                prompt_tokens: 11,
                completion_tokens: 3,
                reported: false
            }),
            model: Some("asked".into()),
        }]
    );
}

#[test]
fn tool_call_fragments_become_deltas() {
    let mut decoder = decoder();
    let opening = decoder
        .decode(&event(
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_9",
                "type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        ))
        .unwrap();
    assert_eq!(
        opening.events,
        vec![ChatEvent::Delta {
            content: None,
            tool_calls: vec![ToolCallDelta {
                index: 0,
                id: Some("call_9".into()),
                name: Some("get_weather".into()),
                arguments: None,
            }],
        }]
    );
    let fragment = decoder
        .decode(&event(
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[
                {"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
        ))
        .unwrap();
    assert_eq!(
        fragment.events,
        vec![ChatEvent::Delta {
            content: None,
            tool_calls: vec![ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: Some("{\"city\":".into()),
            }],
        }]
    );
}

#[test]
fn broken_streams_are_errors() {
    let mut decoder = decoder();
    assert!(matches!(
        decoder.decode(&event("{\"choices\": [")),
        Err(LlmError::InvalidResponse(_))
    ));
    assert!(matches!(
        decoder.end_of_body(),
        Err(LlmError::Connection(_))
    ));
    let error = decoder
        .decode(&event(
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        ))
        .unwrap_err();
    assert_eq!(
        error,
        LlmError::Upstream {
            status: 502,
            message: "overloaded".into()
        }
    );
}

#[test]
fn whole_completion_with_tool_calls_and_lenient_fields() {
    let wire: CompletionWire = serde_json::from_str(
        r#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[
            {"type":"function","function":{"name":"lookup","arguments":{"q":"x"}}}]},
            "finish_reason":"tool_calls"}]}"#,
    )
    .unwrap();
    let response = wire.into_response(&request()).unwrap();
    assert_eq!(response.model, "asked");
    assert_eq!(response.message.content, None);
    assert_eq!(response.message.tool_calls[0].id, "call_0");
    assert_eq!(
        response.message.tool_calls[0].function.arguments,
        r#"{"q":"x"}"#
    );
    let usage = response.usage.unwrap();
    assert!(!usage.reported);
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
}

#[test]
fn a_completion_without_choices_is_invalid() {
    let wire: CompletionWire = serde_json::from_str(r#"{"id":"x","choices":[]}"#).unwrap();
    assert!(matches!(
        wire.into_response(&request()),
        Err(LlmError::InvalidResponse(_))
    ));
}

#[test]
fn debug_never_shows_the_key() {
    let policy = crate::OutboundPolicy::default();
    let endpoint = Endpoint::parse("https://api.openai.com/v1", &policy).unwrap();
    let client = crate::http_client(&policy, &Timeouts::default()).unwrap();
    let provider = OpenAiCompatible::new(
        "openai",
        endpoint,
        Some(SecretString::from("sk-very-secret")),
        client,
        Timeouts::default(),
    );
    let debug = format!("{provider:?}");
    assert!(!debug.contains("sk-very-secret"), "{debug}");
    assert!(debug.contains("[redacted]"));
}
