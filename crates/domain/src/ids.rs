//! Typed identifiers. Every id is a UUIDv7 (time-ordered, so ids double as
//! pagination cursors) wrapped in its own type so a `UserId` can never be passed
//! where a `TenantId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an id read from a trusted source (the database, a verified token).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses an id given by a client; the error names what was expected.
            pub fn parse(text: &str) -> Result<Self, crate::Error> {
                Uuid::try_parse(text.trim()).map(Self).map_err(|_| {
                    crate::Error::invalid(
                        None,
                        format!("'{}' is not a valid {} (expected a UUID)", crate::values::printable(text, 40), $what),
                    )
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }
    };
}

id_type!(
    /// A tenant (organisation).
    TenantId, "tenant id"
);
id_type!(
    /// A user; belongs to exactly one tenant.
    UserId, "user id"
);
id_type!(
    /// A tenant API key.
    ApiKeyId, "API key id"
);
id_type!(
    /// A login session (one refresh-token family).
    SessionId, "session id"
);
id_type!(
    /// One refresh token of a session's rotation chain.
    RefreshTokenId, "refresh token id"
);
id_type!(
    /// A single-use password setup or reset token.
    PasswordTokenId, "password token id"
);
id_type!(
    /// A pending second login step (multi-factor challenge).
    MfaChallengeId, "MFA challenge id"
);
id_type!(
    /// A tenant's connection to a single sign-on identity provider.
    SsoConnectionId, "SSO connection id"
);
id_type!(
    /// A pending single sign-on login (its `state`).
    SsoStateId, "SSO login state id"
);
id_type!(
    /// A platform operator key.
    OperatorKeyId, "operator key id"
);
id_type!(
    /// A token-signing key; its string form is the JWT `kid`.
    SigningKeyId, "signing key id"
);
id_type!(
    /// A conversation of one user.
    ConversationId, "conversation id"
);
id_type!(
    /// A message of a conversation.
    MessageId, "message id"
);
id_type!(
    /// A persona (a named system prompt with model settings).
    PersonaId, "persona id"
);
id_type!(
    /// A usage record (one provider call).
    UsageId, "usage record id"
);
id_type!(
    /// A budget.
    BudgetId, "budget id"
);
id_type!(
    /// A reservation of budget for a call in flight.
    ReservationId, "reservation id"
);
id_type!(
    /// A model provider configured by a tenant.
    ProviderId, "provider id"
);
id_type!(
    /// A long-term memory (of one user, or shared by the tenant).
    MemoryId, "memory id"
);
id_type!(
    /// An uploaded document.
    DocumentId, "document id"
);
id_type!(
    /// A passage (chunk) of a document.
    ChunkId, "chunk id"
);
id_type!(
    /// A group provisioned through SCIM.
    ScimGroupId, "group id"
);
id_type!(
    /// A legal hold (keeps a tenant's, a user's or a conversation's data from retention).
    LegalHoldId, "legal hold id"
);
