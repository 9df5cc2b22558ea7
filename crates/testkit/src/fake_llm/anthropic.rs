//! The fake Anthropic Messages endpoint (whole and streamed answers, tool use).

use super::*;

pub(super) async fn messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    super::chat(Api::Anthropic, shared, headers, body).await
}

fn stop_reason(plan: &Plan) -> &'static str {
    if plan.tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    }
}

pub(super) fn whole(plan: &Plan) -> Response {
    let mut content = vec![json!({"type": "text", "text": plan.text})];
    if let Some((name, arguments)) = &plan.tool {
        let input: Value = serde_json::from_str(arguments).unwrap_or(json!({}));
        content
            .push(json!({"type": "tool_use", "id": "toolu_fake_1", "name": name, "input": input}));
    }
    let mut body = json!({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": plan.model,
        "content": content, "stop_reason": stop_reason(plan), "stop_sequence": null,
    });
    if plan.usage {
        let (input, output) = (plan.prompt_tokens, plan.completion_tokens);
        body["usage"] = json!({"input_tokens": input, "output_tokens": output});
    }
    json_response(StatusCode::OK, &body)
}

/// `message_start`, a text block in pieces, a `tool_use` block with its
/// input in pieces, `message_delta` (stop reason, usage), `message_stop`.
pub(super) fn frames(plan: &Plan) -> Vec<Frame> {
    let event = |data: Value| {
        let name = data["type"].as_str().unwrap_or_default().to_owned();
        Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
    };
    let mut start = json!({"type": "message_start", "message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": plan.model,
        "content": [], "stop_reason": null, "stop_sequence": null,
    }});
    if plan.usage {
        start["message"]["usage"] = json!({"input_tokens": plan.prompt_tokens, "output_tokens": 1});
    }
    let text_block = json!({"type": "text", "text": ""});
    let mut frames = vec![
        Frame::now(event(start)),
        Frame::now(event(
            json!({"type": "content_block_start", "index": 0, "content_block": text_block}),
        )),
        Frame::now(event(json!({"type": "ping"}))),
    ];
    for (delay, piece) in plan.pieces() {
        let delta = json!({"type": "text_delta", "text": piece});
        frames.push(Frame::after(
            delay,
            event(json!({"type": "content_block_delta", "index": 0, "delta": delta})),
        ));
    }
    frames.push(Frame::now(event(
        json!({"type": "content_block_stop", "index": 0}),
    )));
    if let Some((name, arguments)) = &plan.tool {
        let block = json!({"type": "tool_use", "id": "toolu_fake_1", "name": name, "input": {}});
        frames.push(Frame::now(event(
            json!({"type": "content_block_start", "index": 1, "content_block": block}),
        )));
        for piece in split_text(arguments, 3) {
            let delta = json!({"type": "input_json_delta", "partial_json": piece});
            frames.push(Frame::now(event(
                json!({"type": "content_block_delta", "index": 1, "delta": delta}),
            )));
        }
        frames.push(Frame::now(event(
            json!({"type": "content_block_stop", "index": 1}),
        )));
    }
    let stop = json!({"stop_reason": stop_reason(plan), "stop_sequence": null});
    let mut delta = json!({"type": "message_delta", "delta": stop});
    if plan.usage {
        delta["usage"] = json!({"output_tokens": plan.completion_tokens});
    }
    frames.push(Frame::now(event(delta)));
    frames.push(Frame::now(event(json!({"type": "message_stop"}))));
    frames
}
