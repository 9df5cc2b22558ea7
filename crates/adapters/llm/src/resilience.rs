//! Retries, fallback and circuit breaking over an ordered list of providers
//! (the loop is shared with [`crate::ResilientEmbeddings`]).
//!
//! For each member in order: skip it while its breaker is open; otherwise
//! try it up to `attempts_per_provider` times with full-jitter exponential
//! backoff (or the upstream's `Retry-After`). An error that another attempt
//! cannot fix (a bad request, an invalid response, a refusal) is returned at
//! once: sending the same request elsewhere would fail the same way or, for
//! a refusal, defeat its purpose. Transient errors move on to the next
//! member; when every member has failed, the last error is returned.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use karen_domain::ports::{
    ChatEvent, ChatProvider, ChatRequest, ChatResponse, ChatStream, EmbeddingProvider, LlmError,
};

use crate::breaker::CircuitBreaker;

/// How many times to try each provider and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts on one provider before falling back to the next (at least 1).
    pub attempts_per_provider: u32,
    /// The backoff before the second attempt; it doubles with each attempt.
    pub base_delay: Duration,
    /// The longest wait between attempts. A `Retry-After` longer than this
    /// is not waited for: the next provider is tried instead.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Two attempts per provider, 250 ms base delay, at most 5 s of waiting.
    fn default() -> Self {
        Self {
            attempts_per_provider: 2,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter backoff after failed attempt number `attempt` (0-based):
    /// uniformly random in `[0, min(max_delay, base_delay × 2^attempt)]`, so
    /// that many clients failing together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1_u32 << attempt.min(31))
            .min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// One provider of a chain (chat or embeddings), with its breaker (shared
/// with every other chain that uses the provider, see
/// [`crate::BreakerRegistry`]).
pub struct Member<P: ?Sized> {
    /// The provider called.
    pub provider: Arc<P>,
    /// Its circuit breaker.
    pub breaker: Arc<CircuitBreaker>,
}

/// A member of a chat chain.
pub type ChainMember = Member<dyn ChatProvider>;

impl<P: ?Sized> Member<P> {
    /// A member calling `provider` behind `breaker`.
    pub fn new(provider: Arc<P>, breaker: Arc<CircuitBreaker>) -> Self {
        Self { provider, breaker }
    }
}

impl<P: ?Sized> Clone for Member<P> {
    fn clone(&self) -> Self {
        Self {
            provider: Arc::clone(&self.provider),
            breaker: Arc::clone(&self.breaker),
        }
    }
}

/// What a chain needs to know of a provider besides how to call it.
pub trait Named {
    /// The provider's name, as logged and metered.
    fn provider_name(&self) -> &str;
}

impl Named for dyn ChatProvider {
    fn provider_name(&self) -> &str {
        self.name()
    }
}

impl Named for dyn EmbeddingProvider {
    fn provider_name(&self) -> &str {
        self.name()
    }
}

impl<P: ?Sized + Named> fmt::Debug for Member<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainMember")
            .field("provider", &self.provider.provider_name())
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// A [`ChatProvider`] that retries and falls back over its members.
#[derive(Debug)]
pub struct ResilientChat {
    name: String,
    members: Vec<ChainMember>,
    retry: RetryPolicy,
}

impl ResilientChat {
    /// A chain trying `members` in order.
    pub fn new(name: impl Into<String>, members: Vec<ChainMember>, retry: RetryPolicy) -> Self {
        Self {
            name: name.into(),
            members,
            retry,
        }
    }

    /// Runs `call` against the members as the module documentation describes.
    async fn run<'a, T, F, Fut>(&'a self, call: F) -> Result<(T, &'a str), LlmError>
    where
        F: Fn(&'a dyn ChatProvider) -> Fut + Send,
        Fut: Future<Output = Result<T, LlmError>> + Send,
        T: Send,
    {
        run_chain(&self.name, &self.retry, &self.members, call).await
    }
}

/// The retry, fallback and breaker loop shared by the chat and embedding
/// chains (see the module documentation); returns the value and the name of
/// the member that produced it.
pub(crate) async fn run_chain<'a, P, T, F, Fut>(
    chain: &str,
    retry: &RetryPolicy,
    members: &'a [Member<P>],
    call: F,
) -> Result<(T, &'a str), LlmError>
where
    P: ?Sized + Named + Send + Sync + 'a,
    F: Fn(&'a P) -> Fut + Send,
    Fut: Future<Output = Result<T, LlmError>> + Send,
    T: Send,
{
    let attempts = retry.attempts_per_provider.max(1);
    let mut last_error = None;
    'members: for candidate in members {
        let name = candidate.provider.provider_name();
        for attempt in 0..attempts {
            let Some(permit) = candidate.breaker.try_acquire() else {
                tracing::debug!(chain = %chain, provider = %name, "circuit open; skipped");
                last_error = Some(LlmError::CircuitOpen {
                    provider: name.to_owned(),
                });
                continue 'members;
            };
            let error = match call(candidate.provider.as_ref()).await {
                Ok(value) => {
                    permit.record(Ok(()));
                    return Ok((value, name));
                }
                Err(error) => error,
            };
            permit.record(Err(&error));
            tracing::warn!(
                chain = %chain,
                provider = %name,
                attempt = attempt + 1,
                transient = error.is_transient(),
                error = %error,
                "model provider call failed"
            );
            if !error.is_transient() {
                return Err(error);
            }
            let wait = match &error {
                LlmError::RateLimited {
                    retry_after: Some(after),
                } => Some(*after),
                _ => None,
            };
            last_error = Some(error);
            if attempt + 1 >= attempts {
                continue 'members;
            }
            let delay = match wait {
                // Waiting that long would stall the request: try the next provider.
                Some(after) if after > retry.max_delay => continue 'members,
                Some(after) => after,
                None => retry.backoff(attempt),
            };
            tokio::time::sleep(delay).await;
        }
    }
    Err(last_error.unwrap_or_else(|| LlmError::Refused("no model provider is configured".into())))
}

/// Opens a stream and waits for its first event, so that a stream failing
/// before it produced anything can still be retried or sent elsewhere.
async fn open_stream(
    provider: &dyn ChatProvider,
    request: &ChatRequest,
) -> Result<ChatStream, LlmError> {
    let mut stream = provider.stream(request).await?;
    match stream.next().await {
        Some(Ok(first)) => {
            let first = futures::stream::once(futures::future::ready(Ok(first)));
            Ok(Box::pin(first.chain(stream)))
        }
        Some(Err(error)) => Err(error),
        None => Err(LlmError::InvalidResponse(
            "the stream ended before its first event".into(),
        )),
    }
}

#[async_trait]
impl ChatProvider for ResilientChat {
    fn name(&self) -> &str {
        &self.name
    }

    /// The answer names the member that gave it (unless a nested chain already did).
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let (mut response, served_by) = self.run(|provider| provider.complete(request)).await?;
        response
            .provider
            .get_or_insert_with(|| served_by.to_owned());
        Ok(response)
    }

    /// Retries and fallback apply until the first event; after it, errors
    /// reach the caller (part of the answer has been handed out already).
    /// The final event names the member that answered.
    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let (stream, served_by) = self.run(|provider| open_stream(provider, request)).await?;
        let served_by = served_by.to_owned();
        Ok(Box::pin(stream.map(move |event| match event {
            Ok(ChatEvent::Finish {
                finish_reason,
                usage,
                model,
                provider,
            }) => Ok(ChatEvent::Finish {
                finish_reason,
                usage,
                model,
                provider: provider.or_else(|| Some(served_by.clone())),
            }),
            other => other,
        })))
    }

    /// Every member's models, in member order, without repeats; members that
    /// fail are left out unless all fail.
    async fn models(&self) -> Result<Vec<String>, LlmError> {
        let mut models: Vec<String> = Vec::new();
        let mut last_error = None;
        let mut any_answered = false;
        for member in &self.members {
            match member.provider.models().await {
                Ok(list) => {
                    any_answered = true;
                    for model in list {
                        if !models.contains(&model) {
                            models.push(model);
                        }
                    }
                }
                Err(error) => last_error = Some(error),
            }
        }
        match last_error {
            Some(error) if !any_answered => Err(error),
            _ => Ok(models),
        }
    }
}

#[cfg(test)]
#[path = "resilience_tests.rs"]
mod tests;
