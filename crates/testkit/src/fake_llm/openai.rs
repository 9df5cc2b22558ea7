//! The fake OpenAI chat completions endpoint (whole and streamed answers).

use super::*;

pub(super) async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    super::chat(Api::OpenAi, shared, headers, body).await
}

fn usage(plan: &Plan) -> Value {
    json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
    })
}

fn tool_call(name: &str, arguments: &str) -> Value {
    let function = json!({"name": name, "arguments": arguments});
    json!({"id": "call_fake_1", "type": "function", "function": function})
}

fn finish_reason(plan: &Plan) -> &'static str {
    if plan.tool.is_some() {
        "tool_calls"
    } else {
        "stop"
    }
}

pub(super) fn whole(plan: &Plan) -> Response {
    let mut message = json!({"role": "assistant", "content": plan.text});
    if let Some((name, arguments)) = &plan.tool {
        message["tool_calls"] = json!([tool_call(name, arguments)]);
    }
    let mut body = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": plan.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(plan)}],
    });
    if plan.usage {
        body["usage"] = usage(plan);
    }
    json_response(StatusCode::OK, &body)
}

/// `data: {chunk}` events: role, text pieces, tool call fragments, the
/// finish reason, usage (when asked for), `[DONE]`.
pub(super) fn frames(plan: &Plan, include_usage: bool) -> Vec<Frame> {
    let chunk = |delta: Value, finish_reason: Option<&str>| {
        let chunk = json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_767_225_600,
            "model": plan.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let mut frames = vec![Frame::now(chunk(
        json!({"role": "assistant", "content": ""}),
        None,
    ))];
    for (delay, piece) in plan.pieces() {
        frames.push(Frame::after(delay, chunk(json!({"content": piece}), None)));
    }
    if let Some((name, arguments)) = &plan.tool {
        let mut opening = tool_call(name, "");
        opening["index"] = json!(0);
        frames.push(Frame::now(chunk(json!({"tool_calls": [opening]}), None)));
        for piece in split_text(arguments, 3) {
            let fragment = json!({"index": 0, "function": {"arguments": piece}});
            frames.push(Frame::now(chunk(json!({"tool_calls": [fragment]}), None)));
        }
    }
    frames.push(Frame::now(chunk(json!({}), Some(finish_reason(plan)))));
    if include_usage && plan.usage {
        let usage = usage(plan);
        let last =
            json!({"id": "chatcmpl-fake", "model": plan.model, "choices": [], "usage": usage});
        frames.push(Frame::now(format!("data: {last}\n\n")));
    }
    frames.push(Frame::now("data: [DONE]\n\n"));
    frames
}

pub(super) async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.receive(&headers, &Bytes::new());
    let data: Vec<Value> = FAKE_MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "owned_by": "karen-testkit"}))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// Deterministic vectors ([`fake_embedding`]) in input order.
pub(super) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, _) = shared.receive(&headers, &body);
    let inputs: Vec<String> = match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().map(content_text).collect(),
        _ => return Api::OpenAi.error(StatusCode::BAD_REQUEST, "input is required"),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| json!({"index": index, "embedding": fake_embedding(input)}))
        .collect();
    let tokens: u32 = inputs.iter().map(|input| fake_token_count(input)).sum();
    let usage = json!({"prompt_tokens": tokens, "total_tokens": tokens});
    let body = json!({"object": "list", "data": data, "model": request["model"], "usage": usage});
    json_response(StatusCode::OK, &body)
}
