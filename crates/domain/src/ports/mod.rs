//! Ports: the traits services use and adapters implement. Each has an embedded
//! and a scale-out implementation, tested by one shared contract suite.

mod audit_sink;
mod cache;
mod erasure;
mod index;
mod llm;
mod mfa;
mod rate_limit;
mod retention;
mod saml;
mod scim;
mod security;
mod sso;
mod store;

pub use audit_sink::AuditSink;
pub use cache::{BudgetHold, BudgetReserve, CacheKey, Counters, TenantNamespace};
pub use erasure::{ErasedRows, ErasureRepo};
pub use index::{
    EntryAccess, EntryKey, EntryKind, Hit, IndexStatus, SearchFilter, TextEntry, TextIndex,
    VectorEntry, VectorIndex, VectorSpace,
};
pub use llm::{
    ChatEvent, ChatMessage, ChatProvider, ChatRequest, ChatResponse, ChatRole, ChatStream,
    ContextItem, EmbeddingProvider, Embeddings, FunctionCall, LlmError, ModelRouter,
    OFFLINE_MODEL_ID, RoutedEmbeddings, RoutedModel, TokenUsage, ToolCall, ToolCallDelta,
    context_prompt,
};
pub use mfa::MfaRepo;
pub use rate_limit::RateLimiter;
pub use retention::{AuditPrefix, ExpiredRow, RetentionRepo};
pub use saml::SamlServiceProvider;
pub use scim::ScimRepo;
pub use security::{
    AccessClaims, AccessTokens, AuditSigner, DataCipher, DataKey, KeyProvider, PasswordHasher,
    ResealBatch, ResealCursor, TenantKeyInfo, TenantKeyRepo,
};
pub use sso::{AuthorizationRequest, CodeRedemption, OidcClient, OidcError, SsoRepo};
pub use store::{
    ActivityCursor, ApiKeyRepo, AuditRepo, BudgetRepo, ConversationRepo, DocumentRepo,
    EmbeddingJobRepo, EmbeddingRepo, MemoryRepo, MemoryScope, ModelUsage, PasswordTokenRepo,
    PersonaRepo, PlatformTx, ProviderRepo, PurgeReport, Reservation, RoleRepo, SessionRepo, Store,
    TenantTx, UsageFilter, UsageRepo, UsageTotals, UserRepo,
};
