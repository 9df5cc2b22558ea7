use karen_domain::ports::ContextItem;
use serde_json::{Value, json};

use super::*;

fn event(data: Value) -> Event {
    Event {
        event: data["type"].as_str().unwrap_or("message").into(),
        data: data.to_string(),
        id: String::new(),
        retry: None,
    }
}

fn tool_conversation() -> ChatRequest {
    let mut assistant = ChatMessage::text(ChatRole::Assistant, "Let me check.");
    assistant.tool_calls = vec![
        ToolCall {
            id: "toolu_1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            },
        },
        ToolCall {
            id: "toolu_2".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "get_time".into(),
                arguments: String::new(),
            },
        },
    ];
    let tool_result = |id: &str, text: &str| ChatMessage {
        role: ChatRole::Tool,
        content: Some(text.into()),
        tool_calls: vec![],
        tool_call_id: Some(id.into()),
        name: None,
    };
    ChatRequest {
        model: "claude-test".into(),
        messages: vec![
            ChatMessage::text(ChatRole::System, "Be brief."),
            ChatMessage::text(ChatRole::System, "Answer in English."),
            ChatMessage::text(ChatRole::User, "Weather in Paris?"),
            assistant,
            tool_result("toolu_1", "18 °C"),
            tool_result("toolu_2", "14:00"),
        ],
        temperature: Some(0.2),
        max_tokens: None,
        tools: Some(json!([{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
            }
        }])),
        tool_choice: Some(json!("required")),
        stop: Some(vec!["END".into()]),
        user: Some("user-42".into()),
        context: vec![ContextItem {
            source: "memory".into(),
            text: "unused here".into(),
        }],
    }
}

#[test]
fn maps_a_conversation_with_tools_to_the_messages_shape() {
    let body = serde_json::to_value(messages_body(&tool_conversation(), false).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "claude-test",
            "max_tokens": 1024,
            "system": "Be brief.\n\nAnswer in English.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                     "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 °C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "14:00"}
                ]}
            ],
            "temperature": 0.2f32,
            "stop_sequences": ["END"],
            "tools": [{
                "name": "get_weather",
                "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}
            }],
            "tool_choice": {"type": "any"},
            "metadata": {"user_id": "user-42"}
        })
    );
}

#[test]
fn invalid_tool_material_is_refused_before_sending() {
    let mut request = tool_conversation();
    request.messages[3].tool_calls[0].function.arguments = "{not json".into();
    assert!(matches!(
        messages_body(&request, false),
        Err(LlmError::Refused(_))
    ));
    let mut request = tool_conversation();
    request.messages[4].tool_call_id = None;
    assert!(matches!(
        messages_body(&request, false),
        Err(LlmError::Refused(_))
    ));
    let mut request = tool_conversation();
    request.tools = Some(json!({"not": "a list"}));
    assert!(matches!(
        messages_body(&request, false),
        Err(LlmError::Refused(_))
    ));
    let mut request = tool_conversation();
    request
        .messages
        .retain(|message| message.role == ChatRole::System);
    assert!(matches!(
        messages_body(&request, false),
        Err(LlmError::Refused(_))
    ));
}

#[test]
fn named_tool_choice_maps_to_a_tool() {
    let mut request = tool_conversation();
    request.tool_choice = Some(json!({"type": "function", "function": {"name": "get_weather"}}));
    let body = serde_json::to_value(messages_body(&request, true).unwrap()).unwrap();
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
    assert_eq!(body["stream"], json!(true));
}

#[test]
fn response_blocks_become_text_and_tool_calls() {
    let wire: MessageWire = serde_json::from_value(json!({
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-20250101",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 30, "output_tokens": 12, "cache_read_input_tokens": 5}
    }))
    .unwrap();
    let response = into_response(wire, &tool_conversation());
    assert_eq!(response.model, "claude-test-20250101");
    assert_eq!(response.message.content.as_deref(), Some("Checking."));
    assert_eq!(response.message.tool_calls[0].id, "toolu_9");
    assert_eq!(
        response.message.tool_calls[0].function.arguments,
        r#"{"city":"Oslo"}"#
    );
    assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        response.usage,
        Some(TokenUsage {
            prompt_tokens: 35,
            completion_tokens: 12,
            reported: true
        })
    );
}

#[test]
fn stop_reasons_map_to_openai_terms() {
    assert_eq!(finish_reason("end_turn"), "stop");
    assert_eq!(finish_reason("max_tokens"), "length");
    assert_eq!(finish_reason("tool_use"), "tool_calls");
    assert_eq!(finish_reason("stop_sequence"), "stop");
}

#[test]
fn stream_events_become_deltas_and_a_finish() {
    let mut decoder = AnthropicDecoder {
        requested_model: "claude-test".into(),
        ..Default::default()
    };
    let usage = json!({"input_tokens": 25, "output_tokens": 1});
    let tool_block =
        json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}});
    let text_delta = json!({"type": "text_delta", "text": "Hi"});
    let stop = json!({"stop_reason": "tool_use"});
    let json_delta = |part: &str| json!({"type": "input_json_delta", "partial_json": part});
    let events = [
        json!({"type": "message_start", "message": {"model": "claude-x", "usage": usage}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": text_delta}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": tool_block}),
        json!({"type": "content_block_delta", "index": 1, "delta": json_delta("{\"city\":")}),
        json!({"type": "content_block_delta", "index": 1, "delta": json_delta("\"Paris\"}")}),
        json!({"type": "message_delta", "delta": stop, "usage": {"output_tokens": 15}}),
        json!({"type": "message_stop"}),
    ];
    let mut out = Vec::new();
    let mut finished = false;
    for data in events {
        let decoded = decoder.decode(&event(data)).unwrap();
        out.extend(decoded.events);
        finished = decoded.finished;
    }
    assert!(finished);
    let tool = |id: Option<&str>, name: Option<&str>, arguments: Option<&str>| ChatEvent::Delta {
        content: None,
        tool_calls: vec![ToolCallDelta {
            index: 0,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.map(str::to_owned),
        }],
    };
    assert_eq!(
        out,
        vec![
            ChatEvent::Delta {
                content: Some("Hi".into()),
                tool_calls: vec![]
            },
            tool(Some("toolu_1"), Some("get_weather"), None),
            tool(None, None, Some("{\"city\":")),
            tool(None, None, Some("\"Paris\"}")),
            ChatEvent::Finish {
                provider: None,
                finish_reason: Some("tool_calls".into()),
                usage: Some(TokenUsage {
                    prompt_tokens: 25,
                    completion_tokens: 15,
                    reported: true
                }),
                model: Some("claude-x".into()),
            },
        ]
    );
}

#[test]
fn error_events_map_to_errors() {
    let mut decoder = AnthropicDecoder::default();
    let overloaded =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    assert_eq!(
        decoder.decode(&event(overloaded)).unwrap_err(),
        LlmError::Upstream {
            status: 529,
            message: "Overloaded".into()
        }
    );
    let limited =
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}});
    assert_eq!(
        decoder.decode(&event(limited)).unwrap_err(),
        LlmError::RateLimited { retry_after: None }
    );
    assert!(matches!(
        decoder.end_of_body(),
        Err(LlmError::Connection(_))
    ));
}
