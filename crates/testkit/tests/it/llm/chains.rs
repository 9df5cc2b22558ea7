//! Retries, fallback, circuit breakers, the SSRF policy over real connections, cancellation.

use super::*;

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
