//! Karen's domain: the types and rules of tenants, users, roles, permissions and
//! credentials, the one error enum with stable codes, and the ports (traits) that
//! adapters implement. Nothing here performs I/O.

pub mod audit;
pub mod budget;
pub mod chat;
pub mod clock;
pub mod credentials;
pub mod documents;
pub mod embeddings;
pub mod error;
pub mod extraction;
pub mod ids;
pub mod library;
pub mod memory;
pub mod mfa;
pub mod page;
pub mod password_policy;
pub mod permission;
pub mod ports;
pub mod principal;
pub mod providers;
pub mod rate_limit;
pub mod retention;
pub mod saml;
pub mod scim;
pub mod sso;
pub mod tenant;
pub mod user;
pub mod values;
pub mod words;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use ids::{
    ApiKeyId, BudgetId, ChunkId, ConversationId, DocumentId, LegalHoldId, MemoryId, MessageId,
    MfaChallengeId, OperatorKeyId, PasswordTokenId, PersonaId, ProviderId, RefreshTokenId,
    ReservationId, ScimGroupId, SessionId, SigningKeyId, SsoConnectionId, SsoStateId, TenantId,
    UsageId, UserId,
};
pub use permission::{BuiltinRole, Permission, PermissionSet};
pub use principal::{
    Actor, OperatorPrincipal, Principal, Subject, SystemReason, TenantContext, TenantScope,
};
pub use values::{DisplayName, Email, RoleName, Slug, TenantName};
