//! The offline provider, the Anthropic client, models and embeddings.

use super::*;

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
