//! Reading domain values out of result rows (the same code for both backends).

use karen_domain::clock::from_millis;
use karen_domain::credentials::{
    ApiKeyRecord, OperatorKeyRecord, PrivateKeyDer, RefreshTokenRecord, SecretHash, SessionRecord,
    SigningKeyRecord,
};
use karen_domain::permission::PermissionSet;
use karen_domain::tenant::{Tenant, TenantSettings, TenantStatus};
use karen_domain::user::{CustomRole, LoginFailures, PasswordHash, User, UserStatus};
use karen_domain::values::{DisplayName, Email, Label, PlanName, RoleName, Slug, TenantName};
use karen_domain::{
    ApiKeyId, Error, OperatorKeyId, RefreshTokenId, SessionId, SigningKeyId, TenantId, UserId,
};
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::conn::Row;

pub(crate) fn time(row: &Row, column: &str) -> Result<OffsetDateTime, Error> {
    row.get::<i64>(column).map(from_millis)
}

pub(crate) fn opt_time(row: &Row, column: &str) -> Result<Option<OffsetDateTime>, Error> {
    Ok(row.get::<Option<i64>>(column)?.map(from_millis))
}

fn uuid(row: &Row, column: &str) -> Result<Uuid, Error> {
    row.get::<Uuid>(column)
}

fn stored<T>(column: &str, parsed: Result<T, Error>) -> Result<T, Error> {
    parsed.map_err(|e| Error::internal(format!("stored {column} is invalid: {e}")))
}

pub(crate) fn hash(row: &Row, column: &str) -> Result<SecretHash, Error> {
    let bytes: Vec<u8> = row.get(column)?;
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::internal(format!("stored {column} is not 32 bytes")))?;
    Ok(SecretHash(array))
}

fn permissions(row: &Row, column: &str) -> Result<PermissionSet, Error> {
    Ok(row.get::<Json<PermissionSet>>(column)?.0)
}

pub(crate) fn tenant(row: &Row) -> Result<Tenant, Error> {
    Ok(Tenant {
        id: TenantId::from_uuid(uuid(row, "id")?),
        slug: stored("slug", Slug::parse(&row.get::<String>("slug")?))?,
        name: stored("name", TenantName::parse(&row.get::<String>("name")?))?,
        plan: stored("plan", PlanName::parse(&row.get::<String>("plan")?))?,
        status: TenantStatus::parse(&row.get::<String>("status")?)?,
        settings: row.get::<Json<TenantSettings>>("settings")?.0,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

/// A user without roles (they come from `user_roles`).
pub(crate) fn user(row: &Row) -> Result<User, Error> {
    Ok(User {
        id: UserId::from_uuid(uuid(row, "id")?),
        tenant_id: TenantId::from_uuid(uuid(row, "tenant_id")?),
        email: stored("email", Email::parse(&row.get::<String>("email")?))?,
        display_name: row
            .get::<Option<String>>("display_name")?
            .map(|n| stored("display_name", DisplayName::parse(&n)))
            .transpose()?,
        status: UserStatus::parse(&row.get::<String>("status")?)?,
        roles: Vec::new(),
        password_hash: row
            .get::<Option<String>>("password_hash")?
            .map(PasswordHash::new),
        login_failures: LoginFailures {
            count: row.get("failed_login_count")?,
            last_failed_at: opt_time(row, "last_failed_login_at")?,
            locked_until: opt_time(row, "locked_until")?,
        },
        sessions_valid_after: time(row, "sessions_valid_after")?,
        last_login_at: opt_time(row, "last_login_at")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

pub(crate) fn role_name(row: &Row, column: &str) -> Result<RoleName, Error> {
    stored(column, RoleName::parse(&row.get::<String>(column)?))
}

pub(crate) fn custom_role(row: &Row) -> Result<CustomRole, Error> {
    Ok(CustomRole {
        tenant_id: TenantId::from_uuid(uuid(row, "tenant_id")?),
        name: role_name(row, "name")?,
        description: row
            .get::<Option<String>>("description")?
            .map(|d| stored("description", Label::parse(&d)))
            .transpose()?,
        permissions: permissions(row, "permissions")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

pub(crate) fn api_key(row: &Row) -> Result<ApiKeyRecord, Error> {
    Ok(ApiKeyRecord {
        id: ApiKeyId::from_uuid(uuid(row, "id")?),
        tenant_id: TenantId::from_uuid(uuid(row, "tenant_id")?),
        user_id: UserId::from_uuid(uuid(row, "user_id")?),
        name: stored("name", Label::parse(&row.get::<String>("name")?))?,
        display_prefix: row.get("display_prefix")?,
        secret_hash: hash(row, "secret_hash")?,
        scopes: permissions(row, "scopes")?,
        expires_at: opt_time(row, "expires_at")?,
        last_used_at: opt_time(row, "last_used_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
        created_at: time(row, "created_at")?,
    })
}

pub(crate) fn session(row: &Row) -> Result<SessionRecord, Error> {
    Ok(SessionRecord {
        id: SessionId::from_uuid(uuid(row, "id")?),
        tenant_id: TenantId::from_uuid(uuid(row, "tenant_id")?),
        user_id: UserId::from_uuid(uuid(row, "user_id")?),
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
        ip: row.get("ip")?,
        user_agent: row.get("user_agent")?,
    })
}

pub(crate) fn refresh_token(row: &Row) -> Result<RefreshTokenRecord, Error> {
    Ok(RefreshTokenRecord {
        id: RefreshTokenId::from_uuid(uuid(row, "id")?),
        tenant_id: TenantId::from_uuid(uuid(row, "tenant_id")?),
        session_id: SessionId::from_uuid(uuid(row, "session_id")?),
        user_id: UserId::from_uuid(uuid(row, "user_id")?),
        secret_hash: hash(row, "secret_hash")?,
        expires_at: time(row, "expires_at")?,
        used_at: opt_time(row, "used_at")?,
        created_at: time(row, "created_at")?,
    })
}

pub(crate) fn operator_key(row: &Row) -> Result<OperatorKeyRecord, Error> {
    Ok(OperatorKeyRecord {
        id: OperatorKeyId::from_uuid(uuid(row, "id")?),
        name: stored("name", Label::parse(&row.get::<String>("name")?))?,
        secret_hash: hash(row, "secret_hash")?,
        created_at: time(row, "created_at")?,
        last_used_at: opt_time(row, "last_used_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
    })
}

pub(crate) fn signing_key(row: &Row) -> Result<SigningKeyRecord, Error> {
    Ok(SigningKeyRecord {
        id: SigningKeyId::from_uuid(uuid(row, "id")?),
        algorithm: row.get("algorithm")?,
        private_key: PrivateKeyDer(row.get("private_key")?),
        public_key: row.get("public_key")?,
        created_at: time(row, "created_at")?,
        retired_at: opt_time(row, "retired_at")?,
    })
}
