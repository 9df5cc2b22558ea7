//! The embedding client against a real HTTP server on a loopback port.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::test_upstream::{Reply, Upstream, echo_vector};
use crate::{Endpoint, OutboundPolicy, Timeouts, http_client};

fn texts(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|text| (*text).to_owned()).collect()
}

#[tokio::test]
async fn sends_the_openai_request_and_reorders_by_index() {
    let upstream = Upstream::start().await;
    let client = upstream.client("openai", Some("sk-test-key"));
    let inputs = texts(&["first text", "second", "the third one"]);
    let embeddings = client
        .embed("text-embedding-3-small", &inputs)
        .await
        .unwrap();
    assert_eq!(embeddings.model, "text-embedding-3-small");
    // The server lists the vectors in reverse; `index` puts them back.
    assert_eq!(
        embeddings.vectors,
        inputs
            .iter()
            .map(|input| echo_vector(input, 3))
            .collect::<Vec<_>>()
    );
    assert_eq!(embeddings.prompt_tokens, 6, "the upstream's usage");
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body,
        json!({"model": "text-embedding-3-small", "input": inputs, "encoding_format": "float"})
    );
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer sk-test-key")
    );
}

#[tokio::test]
async fn tokens_are_counted_locally_without_usage() {
    let upstream = Upstream::start().await;
    upstream.script([Reply::EchoWithoutUsage]);
    let inputs = texts(&["the cat sat", "on the mat"]);
    let embeddings = upstream
        .client("local", None)
        .embed("m", &inputs)
        .await
        .unwrap();
    assert_eq!(embeddings.prompt_tokens, 6);
    assert!(embeddings.counted_locally);
    assert_eq!(upstream.received()[0].authorization, None);
}

#[tokio::test]
async fn large_inputs_are_sent_in_batches_and_reassembled() {
    let upstream = Upstream::start().await;
    upstream.script([Reply::Echo, Reply::EchoWithoutUsage, Reply::Echo]);
    let client = upstream.client("openai", None).with_embedding_batch_size(2);
    let inputs: Vec<String> = (0..5)
        .map(|index| format!("text {index} {}", "word ".repeat(index)))
        .collect();
    let embeddings = client.embed("m", &inputs).await.unwrap();
    assert_eq!(
        embeddings.vectors,
        inputs
            .iter()
            .map(|input| echo_vector(input, 3))
            .collect::<Vec<_>>()
    );
    let sizes: Vec<usize> = upstream
        .received()
        .iter()
        .map(|received| received.body["input"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    // Reported for the first and last batch (2 × 2 + 2 × 1), counted for the second.
    let counted: u32 = inputs[2..4]
        .iter()
        .map(|input| estimate_tokens(input))
        .sum();
    assert_eq!(embeddings.prompt_tokens, 4 + counted + 2);
}

#[tokio::test]
async fn the_default_batch_is_256_inputs() {
    let upstream = Upstream::start().await;
    let inputs: Vec<String> = (0..300).map(|index| format!("input {index}")).collect();
    let embeddings = upstream
        .client("openai", None)
        .embed("m", &inputs)
        .await
        .unwrap();
    assert_eq!(embeddings.vectors.len(), 300);
    assert_eq!(embeddings.vectors[299], echo_vector("input 299", 3));
    assert_eq!(upstream.received().len(), 2);
}

#[tokio::test]
async fn empty_inputs_are_refused_before_any_call() {
    let upstream = Upstream::start().await;
    let client = upstream.client("openai", None);
    assert!(matches!(
        client.embed("m", &[]).await,
        Err(LlmError::Refused(_))
    ));
    let error = client.embed("m", &texts(&["fine", ""])).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Refused(reason) if reason.contains("input 1")),
        "{error}"
    );
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn inconsistent_answers_are_invalid() {
    let upstream = Upstream::start().await;
    let client = upstream.client("openai", None);
    let two = texts(&["a", "b"]);
    let invalid = |result: Result<Embeddings, LlmError>| match result {
        Err(LlmError::InvalidResponse(detail)) => detail,
        other => panic!("expected an invalid response, got {other:?}"),
    };
    // One vector for two inputs.
    upstream.script([Reply::Body(
        json!({"data": [{"index": 0, "embedding": [1.0]}]}),
    )]);
    assert!(invalid(client.embed("m", &two).await).contains("1 embeddings for 2 inputs"));
    // Vectors of different lengths.
    upstream.script([Reply::Body(json!({"data": [
        {"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}
    ]}))]);
    assert!(invalid(client.embed("m", &two).await).contains("dimensions"));
    // A repeated index.
    upstream.script([Reply::Body(json!({"data": [
        {"index": 1, "embedding": [1.0]}, {"index": 1, "embedding": [2.0]}
    ]}))]);
    assert!(invalid(client.embed("m", &two).await).contains("repeated"));
    // Batches of different lengths.
    upstream.script([Reply::EchoWithDimensions(3), Reply::EchoWithDimensions(4)]);
    let batched = client.with_embedding_batch_size(1);
    assert!(invalid(batched.embed("m", &two).await).contains("dimensions"));
    // Not JSON of the expected shape.
    upstream.script([Reply::Body(json!({"object": "list"}))]);
    let client = upstream.client("openai", None);
    invalid(client.embed("m", &two).await);
}

#[tokio::test]
async fn error_statuses_map_to_llm_errors_without_the_key() {
    let upstream = Upstream::start().await;
    let client = upstream.client("openai", Some("sk-leaky"));
    let inputs = texts(&["x"]);
    upstream.script([Reply::Status(
        429,
        json!({"error": {"message": "slow down"}}),
        Some("3"),
    )]);
    assert_eq!(
        client.embed("m", &inputs).await.unwrap_err(),
        LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        }
    );
    upstream.script([Reply::Status(
        401,
        json!({"error": {"message": "Incorrect API key provided: sk-leaky"}}),
        None,
    )]);
    let error = client.embed("m", &inputs).await.unwrap_err();
    assert_eq!(
        error,
        LlmError::Upstream {
            status: 401,
            message: "Incorrect API key provided: [redacted]".into()
        }
    );
    assert!(!error.is_transient());
    upstream.script([Reply::Status(503, json!({"error": "loading model"}), None)]);
    let error = client.embed("m", &inputs).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(!format!("{client:?}").contains("sk-leaky"));
}

#[tokio::test]
async fn a_slow_upstream_times_out() {
    let upstream = Upstream::start().await;
    upstream.script([Reply::Slow(Duration::from_secs(3))]);
    let policy = OutboundPolicy::new([format!("127.0.0.1:{}", upstream.port())]);
    let timeouts = Timeouts {
        request: Duration::from_millis(300),
        ..Timeouts::default()
    };
    let client = OpenAiCompatible::new(
        "slow",
        Endpoint::parse(&upstream.base_url(), &policy).unwrap(),
        None,
        http_client(&policy, &timeouts).unwrap(),
        timeouts,
    );
    assert_eq!(
        client.embed("m", &texts(&["x"])).await.unwrap_err(),
        LlmError::Timeout
    );
}

#[tokio::test]
async fn the_outbound_policy_is_enforced_when_connecting() {
    let upstream = Upstream::start().await;
    // The URL names a host that resolves to loopback; allowed when the
    // provider is configured, refused by the client's resolver at connect
    // time (as when a name is re-pointed at a private address later).
    let configured = OutboundPolicy::new([format!("localhost:{}", upstream.port())]);
    let url = format!("http://localhost:{}/v1", upstream.port());
    let endpoint = Endpoint::parse(&url, &configured).unwrap();
    let strict = OutboundPolicy::default();
    let client = OpenAiCompatible::new(
        "guarded",
        endpoint,
        None,
        http_client(&strict, &Timeouts::default()).unwrap(),
        Timeouts::default(),
    );
    let error = client.embed("m", &texts(&["x"])).await.unwrap_err();
    assert!(
        matches!(&error, LlmError::Refused(reason) if reason.contains("loopback")),
        "{error}"
    );
    assert!(upstream.received().is_empty());
}
