//! Single sign-on. A tenant administrator configures a connection to the
//! organisation's identity provider, OIDC (issuer, client, scopes) or SAML
//! 2.0 (IdP metadata or certificate and SSO URL, see [`saml`]), with a
//! claim-to-role mapping. Users then sign in at the provider; Karen creates
//! their account on the first login (just in time), keeps their roles in step
//! with the provider's claim on every login, and issues the same session
//! tokens as a password login.
//!
//! The provider answers for authentication, second factor included: an SSO
//! login does not ask for Karen's TOTP code (require MFA at the provider).
//! The owner role is never granted or removed through SSO, and owners keep
//! their password login even when the tenant requires SSO (the way back in
//! if the provider fails).

mod login;
mod saml;

pub use login::OidcCallback;
pub use saml::{
    SAML_ACS_PATH, SamlAcsPost, SamlConnection, SamlConnectionInput, SamlIdpSource,
    saml_metadata_path,
};

use std::sync::Arc;
use std::time::Duration;

use karen_domain::permission::{BuiltinRole, Permission};
use karen_domain::ports::{OidcClient, OidcError, SamlServiceProvider, TenantTx};
use karen_domain::sso::{OidcSettings, RoleMapping, SsoConnection, SsoKind};
use karen_domain::{Error, Result, SsoConnectionId, TenantContext};
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::Record;
use crate::auth::AuthService;
use crate::{Authority, Deps};

/// The path of the OIDC callback (appended to the public URL).
pub const OIDC_CALLBACK_PATH: &str = "/v1/auth/sso/oidc/callback";

/// What single sign-on needs from outside (configured by the binary).
#[derive(Clone)]
pub struct SsoPorts {
    /// The OpenID Connect client; `None` switches SSO off (`feature_disabled`).
    pub oidc: Option<Arc<dyn OidcClient>>,
    /// The SAML 2.0 service provider; `None` switches SAML off (`feature_disabled`).
    pub saml: Option<Arc<dyn SamlServiceProvider>>,
    /// Karen's public base URL (`https://karen.example.com`); the callback is
    /// `<public_url>/v1/auth/sso/oidc/callback`. Unset: derived from the
    /// request only when it is addressed to a loopback host (development).
    pub public_url: Option<String>,
    /// How long a user has to come back from the provider.
    pub login_ttl: Duration,
}

impl Default for SsoPorts {
    fn default() -> Self {
        Self {
            oidc: None,
            saml: None,
            public_url: None,
            login_ttl: Duration::from_secs(600),
        }
    }
}

/// A tenant's OIDC connection as an administrator sees it (never the secret).
#[derive(Debug, Clone)]
pub struct OidcConnection {
    pub id: SsoConnectionId,
    pub settings: OidcSettings,
    pub role_mapping: RoleMapping,
    pub enabled: bool,
    pub client_secret_set: bool,
    /// The URL to register at the provider as the redirect URI, if known.
    pub redirect_uri: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A connection to create or replace.
pub struct OidcConnectionInput {
    pub settings: OidcSettings,
    /// Absent: keep the stored secret (required when creating).
    pub client_secret: Option<SecretString>,
    pub role_mapping: RoleMapping,
    pub enabled: bool,
}

/// The single sign-on service.
#[derive(Clone)]
pub struct SsoService {
    deps: Arc<Deps>,
    auth: AuthService,
}

/// What is stored of a connection besides its protocol's settings.
struct ConnectionChange {
    kind: SsoKind,
    config: serde_json::Value,
    client_secret: Option<SecretString>,
    role_mapping: RoleMapping,
    enabled: bool,
}

/// A protocol's settings (`protocol` names it in errors) as stored in a connection.
fn stored_settings<S: DeserializeOwned>(connection: &SsoConnection, protocol: &str) -> Result<S> {
    serde_json::from_value(connection.config.clone())
        .map_err(|e| Error::internal(format!("stored {protocol} settings are invalid: {e}")))
}

/// A protocol's settings as the config of a connection to store.
fn settings_config<S: Serialize>(settings: &S, protocol: &str) -> Result<serde_json::Value> {
    serde_json::to_value(settings)
        .map_err(|e| Error::internal(format!("{protocol} settings do not serialize: {e}")))
}

fn oidc_settings(connection: &SsoConnection) -> Result<OidcSettings> {
    stored_settings(connection, "OIDC")
}

/// The audited view of a connection (no secret, only whether one is set).
pub(crate) fn connection_json(connection: &SsoConnection) -> serde_json::Value {
    json!({
        "kind": connection.kind.as_str(),
        "config": connection.config,
        "role_mapping": connection.role_mapping,
        "enabled": connection.enabled,
        "client_secret_set": connection.client_secret.is_some(),
    })
}

/// An OIDC failure while configuring: the issuer is at fault.
fn issuer_problem(error: OidcError) -> Error {
    match error {
        OidcError::Refused(message) => Error::invalid(Some("issuer"), message),
        OidcError::Provider(message) => Error::invalid(
            Some("issuer"),
            format!("the provider's discovery document could not be used: {message}"),
        ),
        OidcError::Rejected(reason) => Error::invalid(Some("issuer"), reason.as_str()),
    }
}

impl SsoService {
    pub(crate) fn new(deps: Arc<Deps>, auth: AuthService) -> Self {
        Self { deps, auth }
    }

    fn oidc(&self) -> Result<&Arc<dyn OidcClient>> {
        self.deps
            .sso
            .oidc
            .as_ref()
            .ok_or(Error::FeatureDisabled("sso"))
    }

    /// The callback URL: the configured public URL, else the request's own
    /// origin when it is a loopback address (development and tests).
    pub(crate) fn redirect_uri(&self, request_origin: Option<&str>) -> Option<String> {
        Some(format!(
            "{}{OIDC_CALLBACK_PATH}",
            self.public_base(request_origin)?
        ))
    }

    /// Karen's public base URL without a trailing slash: the configured one,
    /// else the request's own origin when it is a loopback address.
    pub(crate) fn public_base(&self, request_origin: Option<&str>) -> Option<String> {
        let base = match &self.deps.sso.public_url {
            Some(url) => url.clone(),
            None => request_origin?.to_owned(),
        };
        Some(base.trim_end_matches('/').to_owned())
    }

    fn view(&self, connection: &SsoConnection) -> Result<OidcConnection> {
        Ok(OidcConnection {
            id: connection.id,
            settings: oidc_settings(connection)?,
            role_mapping: connection.role_mapping.clone(),
            enabled: connection.enabled,
            client_secret_set: connection.client_secret.is_some(),
            redirect_uri: self.redirect_uri(None),
            created_at: connection.created_at,
            updated_at: connection.updated_at,
        })
    }

    /// The tenant's OIDC connection.
    pub async fn oidc_connection(&self, ctx: &TenantContext) -> Result<OidcConnection> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let connection = tx.sso().connection(SsoKind::Oidc).await?;
        tx.commit().await?;
        self.view(&connection.ok_or(Error::NotFound("SSO connection"))?)
    }

    /// Creates or replaces the tenant's OIDC connection. The issuer must pass
    /// the outbound policy and serve a discovery document; mapped roles must
    /// exist and grant nothing the administrator lacks.
    pub async fn put_oidc_connection(
        &self,
        ctx: &TenantContext,
        input: OidcConnectionInput,
    ) -> Result<OidcConnection> {
        ctx.require(Permission::TenantManage)?;
        let oidc = self.oidc()?.clone();
        input.settings.validate()?;
        input.role_mapping.validate()?;
        if let Some(secret) = &input.client_secret {
            let text = secrecy::ExposeSecret::expose_secret(secret);
            if text.is_empty() || text.len() > 1024 {
                return Err(Error::invalid(
                    Some("client_secret"),
                    "the client secret must be 1-1024 characters",
                ));
            }
        }
        // Before any transaction: this reads the provider over the network.
        oidc.check_issuer(input.settings.issuer.trim())
            .await
            .map_err(issuer_problem)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let existing = self
            .existing_for_put(
                &mut *tx,
                ctx,
                SsoKind::Oidc,
                &input.role_mapping,
                input.enabled,
            )
            .await?;
        let client_secret = match (input.client_secret, &existing) {
            (Some(secret), _) => secret,
            (None, Some(old)) => old.client_secret.clone().ok_or_else(|| {
                Error::invalid(Some("client_secret"), "the client secret is required")
            })?,
            (None, None) => {
                return Err(Error::invalid(
                    Some("client_secret"),
                    "the client secret is required when creating the connection",
                ));
            }
        };
        let mut settings = input.settings;
        settings.issuer = settings.issuer.trim().to_owned();
        let change = ConnectionChange {
            kind: SsoKind::Oidc,
            config: settings_config(&settings, "OIDC")?,
            client_secret: Some(client_secret),
            role_mapping: input.role_mapping,
            enabled: input.enabled,
        };
        let connection = self
            .store_connection(&mut *tx, ctx, existing.as_ref(), change)
            .await?;
        tx.commit().await?;
        self.view(&connection)
    }

    /// Removes the tenant's OIDC connection and the links of its identities
    /// (the users stay, and keep any password they have).
    pub async fn delete_oidc_connection(&self, ctx: &TenantContext) -> Result<()> {
        self.delete_connection(ctx, SsoKind::Oidc).await
    }

    /// Checks what every protocol's connection shares before it is stored:
    /// the mapped roles exist and grant nothing the administrator lacks, and
    /// switching it off leaves single sign-on possible where it is required.
    /// Returns the stored connection of `kind`, if any.
    async fn existing_for_put(
        &self,
        tx: &mut dyn TenantTx,
        ctx: &TenantContext,
        kind: SsoKind,
        role_mapping: &RoleMapping,
        enabled: bool,
    ) -> Result<Option<SsoConnection>> {
        let names: Vec<String> = role_mapping.roles().map(ToString::to_string).collect();
        let (_, granted) = crate::users::resolve_roles(tx, &names)
            .await
            .map_err(|e| field_named(e, "role_mapping"))?;
        Authority::Member(ctx).ensure_within(granted, "mapping to these roles")?;
        let existing = tx.sso().connection(kind).await?;
        if !enabled {
            ensure_not_last_required(tx, kind).await?;
        }
        Ok(existing)
    }

    /// Creates or replaces the connection of `change.kind` (keeping the id
    /// and creation time of `existing`), audited as a create or an update.
    async fn store_connection(
        &self,
        tx: &mut dyn TenantTx,
        ctx: &TenantContext,
        existing: Option<&SsoConnection>,
        change: ConnectionChange,
    ) -> Result<SsoConnection> {
        let now = self.deps.clock.now();
        let connection = SsoConnection {
            id: existing.map_or_else(SsoConnectionId::generate, |c| c.id),
            tenant_id: ctx.tenant_id(),
            kind: change.kind,
            config: change.config,
            client_secret: change.client_secret,
            role_mapping: change.role_mapping,
            enabled: change.enabled,
            created_at: existing.map_or(now, |c| c.created_at),
            updated_at: now,
        };
        tx.sso().put_connection(&connection).await?;
        let action = if existing.is_some() {
            "sso.connection.update"
        } else {
            "sso.connection.create"
        };
        let mut record = Record::new(action)
            .target("sso_connection", connection.id)
            .after(&connection_json(&connection));
        if let Some(old) = existing {
            record = record.before(&connection_json(old));
        }
        self.deps.audit(tx, ctx.scope().actor(), record).await?;
        Ok(connection)
    }

    /// Removes the tenant's connection of `kind` and the links of its identities.
    async fn delete_connection(&self, ctx: &TenantContext, kind: SsoKind) -> Result<()> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        ensure_not_last_required(&mut *tx, kind).await?;
        let existing = tx
            .sso()
            .connection(kind)
            .await?
            .ok_or(Error::NotFound("SSO connection"))?;
        tx.sso().delete_connection(kind).await?;
        let record = Record::new("sso.connection.delete")
            .target("sso_connection", existing.id)
            .before(&connection_json(&existing));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), record)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Refuses to switch off or remove the connection of `kind` while the
/// organisation requires single sign-on and no other enabled connection is left.
pub(crate) async fn ensure_not_last_required(tx: &mut dyn TenantTx, kind: SsoKind) -> Result<()> {
    if !tx.tenant().await?.settings.sso_required {
        return Ok(());
    }
    let other = match kind {
        SsoKind::Oidc => SsoKind::Saml,
        SsoKind::Saml => SsoKind::Oidc,
    };
    if tx.sso().connection(other).await?.is_some_and(|c| c.enabled) {
        return Ok(());
    }
    Err(Error::Conflict(
        "the organisation requires single sign-on and this is its only enabled connection; set settings.sso_required to false first".into(),
    ))
}

/// Names `field` as the field at fault of a validation error.
pub(crate) fn field_named(error: Error, field: &str) -> Error {
    match error {
        Error::Invalid { message, .. } => Error::invalid(Some(field), message),
        other => other,
    }
}

/// Whether `roles` holds the owner role.
fn has_owner(roles: &[karen_domain::RoleName]) -> bool {
    roles
        .iter()
        .any(|r| r.as_str() == BuiltinRole::Owner.name())
}
