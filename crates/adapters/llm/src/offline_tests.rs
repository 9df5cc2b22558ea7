use futures::StreamExt;

use super::*;

fn request(question: &str, context: Vec<ContextItem>) -> ChatRequest {
    ChatRequest {
        model: "whatever-was-asked".into(),
        messages: vec![
            ChatMessage::text(ChatRole::System, "You are Karen."),
            ChatMessage::text(ChatRole::User, question),
        ],
        temperature: None,
        max_tokens: None,
        tools: None,
        tool_choice: None,
        stop: None,
        user: None,
        context,
    }
}

fn item(source: &str, text: &str) -> ContextItem {
    ContextItem {
        source: source.into(),
        text: text.into(),
    }
}

#[tokio::test]
async fn without_context_it_says_what_it_is() {
    let provider = OfflineProvider::default();
    let response = provider
        .complete(&request("What is my cat called?", vec![]))
        .await
        .unwrap();
    let text = response.message.content.unwrap();
    assert!(
        text.contains("no stored memories or documents relevant"),
        "{text}"
    );
    assert!(text.contains("not a language model"), "{text}");
    assert!(text.contains("Configure a model provider"), "{text}");
    assert_eq!(response.model, OFFLINE_MODEL_ID);
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
    assert!(!response.usage.unwrap().reported);
}

#[tokio::test]
async fn with_context_it_quotes_items_and_sources() {
    let provider = OfflineProvider::default();
    let context = vec![
        item("memory", "Your cat is called Miso."),
        item(
            "Vet invoice 2025.pdf",
            "Miso had her vaccinations in March.",
        ),
        item("memory", "Your cat is called Miso."),
    ];
    let response = provider
        .complete(&request("What is my cat called?", context))
        .await
        .unwrap();
    let text = response.message.content.unwrap();
    assert!(
        text.starts_with("From what I have stored for you:"),
        "{text}"
    );
    assert!(
        text.contains("- Your cat is called Miso. (source: memory)"),
        "{text}"
    );
    assert!(text.contains("(source: Vet invoice 2025.pdf)"), "{text}");
    assert_eq!(
        text.matches("Your cat is called Miso.").count(),
        1,
        "duplicates are quoted once"
    );
    assert!(text.contains("not a language model"), "{text}");
}

#[tokio::test]
async fn answers_are_deterministic() {
    let provider = OfflineProvider::default();
    let ask = request("cat?", vec![item("memory", "Your cat is called Miso.")]);
    let first = provider.complete(&ask).await.unwrap();
    let second = provider.complete(&ask).await.unwrap();
    assert_eq!(first, second);
}

#[test]
fn long_items_are_cut_to_the_sentences_about_the_question() {
    let filler = "The weather report mentioned light rain over the hills. ".repeat(12);
    let text = format!("{filler}The invoice number for the roof repair is 4471. {filler}");
    let question_terms = content_terms("What was the invoice number for the roof?");
    let quoted = excerpt(&text, &question_terms);
    assert!(
        quoted.contains("The invoice number for the roof repair is 4471."),
        "{quoted}"
    );
    assert!(quoted.chars().count() <= MAX_EXCERPT_CHARS + 10, "{quoted}");
    assert!(quoted.starts_with('…') && quoted.ends_with('…'), "{quoted}");
}

#[test]
fn long_items_without_matching_sentences_start_from_the_beginning() {
    let text = "word ".repeat(200);
    let quoted = excerpt(&text, &content_terms("unrelated question"));
    assert!(quoted.ends_with('…'));
    assert!(quoted.chars().count() <= MAX_EXCERPT_CHARS + 1);
}

#[tokio::test]
async fn max_tokens_cuts_the_answer_and_says_so() {
    let provider = OfflineProvider::default();
    let mut ask = request("anything", vec![]);
    ask.max_tokens = Some(5);
    let response = provider.complete(&ask).await.unwrap();
    assert_eq!(response.finish_reason.as_deref(), Some("length"));
    assert!(estimate_tokens(response.message.content.as_deref().unwrap()) <= 5);
}

#[tokio::test]
async fn stream_yields_the_same_text_in_word_groups_then_finish() {
    let provider = OfflineProvider::default();
    let ask = request("cat?", vec![item("memory", "Your cat is called Miso.")]);
    let whole = provider.complete(&ask).await.unwrap();
    let events: Vec<ChatEvent> = provider
        .stream(&ask)
        .await
        .unwrap()
        .map(|event| event.unwrap())
        .collect()
        .await;
    let (last, deltas) = events.split_last().unwrap();
    assert!(deltas.len() > 2);
    let mut text = String::new();
    for delta in deltas {
        match delta {
            ChatEvent::Delta {
                content: Some(chunk),
                tool_calls,
            } if tool_calls.is_empty() => text.push_str(chunk),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(Some(text), whole.message.content);
    assert_eq!(
        *last,
        ChatEvent::Finish {
            provider: None,
            finish_reason: Some("stop".into()),
            usage: whole.usage,
            model: Some(OFFLINE_MODEL_ID.into()),
        }
    );
}

#[tokio::test]
async fn models_is_the_offline_id() {
    assert_eq!(
        OfflineProvider::default().models().await.unwrap(),
        vec![OFFLINE_MODEL_ID]
    );
}

#[test]
fn word_groups_concatenate_to_the_text() {
    let text = "one two  three\nfour five six seven";
    let groups = word_groups(text, 3);
    assert_eq!(groups.concat(), text);
    assert_eq!(groups.len(), 3);
}
