//! The single sign-on login: the OIDC start (state, nonce, PKCE S256) and
//! callback (single-use state, code exchange, ID token verification), then
//! the part every protocol shares ([`SsoService::complete_login`]): find the
//! user by the provider's subject (never by email), create them on first
//! login, bring their roles in step with the mapped claim, open a session.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use karen_domain::audit::Outcome;
use karen_domain::ports::{AuthorizationRequest, CacheKey, CodeRedemption, OidcError, TenantTx};
use karen_domain::sso::{
    ExternalIdentity, SsoConnection, SsoFailure, SsoIdentity, SsoKind, SsoLoginState,
};
use karen_domain::tenant::{Tenant, TenantStatus};
use karen_domain::user::{LoginFailures, User, UserStatus};
use karen_domain::values::{DisplayName, Email, RoleName, Slug};
use karen_domain::{Actor, Error, Result, SsoStateId, SystemReason, TenantId, TenantScope, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use time::OffsetDateTime;

use super::{SsoService, has_owner, oidc_settings};
use crate::audit::Record;
use crate::auth::{ClientInfo, TokenPair, ip_key};
use crate::credentials::{self, Kind};

/// What the provider sent back to the callback.
pub struct OidcCallback {
    pub state: String,
    pub code: Option<String>,
    /// The provider's `error` parameter (the user declined, or it refused).
    pub error: Option<String>,
}

/// A login back from the provider, its pending login spent.
pub(super) struct ReturningLogin {
    pub(super) tenant: Tenant,
    pub(super) login: SsoLoginState,
    /// The connection the login started at, still enabled.
    pub(super) connection: SsoConnection,
    /// When it came back.
    pub(super) now: OffsetDateTime,
}

/// A refusal of the login, or a failure of Karen itself.
enum Refusal {
    Sso(SsoFailure, Option<UserId>),
    Disabled(UserId),
}

fn random_text() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(credentials::random_bytes::<32>()?))
}

pub(super) fn scope(tenant: TenantId) -> TenantScope {
    TenantScope::system(tenant, SystemReason::Login)
}

/// What a login start answers for an organisation without the connection,
/// so that organisations without SSO and missing ones look the same.
fn no_connection() -> Error {
    Error::NotFound("SSO connection")
}

pub(super) fn public_url_missing() -> Error {
    Error::Unavailable {
        component: "sso",
        detail: "Karen's public URL is not configured; set sso.public_url".into(),
    }
}

/// The tenant's connection of `kind` when it is enabled (a disabled one
/// answers like a missing one).
pub(super) async fn enabled_connection(
    tx: &mut dyn TenantTx,
    kind: SsoKind,
) -> Result<SsoConnection> {
    tx.sso()
        .connection(kind)
        .await?
        .filter(|c| c.enabled)
        .ok_or_else(no_connection)
}

impl SsoService {
    /// Starts an OIDC login for the organisation `slug`: records a single-use
    /// login (state, nonce digest, sealed PKCE verifier) and returns the
    /// provider's authorization URL to redirect the browser to. An unknown
    /// organisation answers exactly like one without SSO.
    pub async fn start_oidc(&self, slug: &str, request_origin: Option<&str>) -> Result<String> {
        let oidc = self.oidc()?.clone();
        let tenant = self.login_tenant(slug).await?;
        let redirect_uri = self
            .redirect_uri(request_origin)
            .ok_or_else(public_url_missing)?;
        let mut tx = self.deps.store.tenant(scope(tenant.id)).await?;
        let connection = enabled_connection(&mut *tx, SsoKind::Oidc).await?;
        tx.commit().await?;
        let settings = oidc_settings(&connection)?;

        let now = self.deps.clock.now();
        let id = SsoStateId::generate();
        let minted = credentials::mint(Kind::SsoState, &[tenant.id.as_uuid(), id.as_uuid()])?;
        let nonce = random_text()?;
        let verifier = SecretString::from(random_text()?);
        let challenge =
            URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.expose_secret().as_bytes()));
        let scopes = settings.requested_scopes();
        let url = oidc
            .authorization_url(&AuthorizationRequest {
                issuer: &settings.issuer,
                client_id: &settings.client_id,
                redirect_uri: &redirect_uri,
                scopes: &scopes,
                state: minted.text.expose_secret(),
                nonce: &nonce,
                code_challenge: &challenge,
            })
            .await
            .map_err(provider_problem)?;
        let mut tx = self.deps.store.tenant(scope(tenant.id)).await?;
        let login = SsoLoginState {
            id,
            tenant_id: tenant.id,
            connection_id: connection.id,
            state_hash: minted.hash,
            nonce_hash: credentials::hash(&nonce),
            pkce_verifier: verifier,
            redirect_uri,
            expires_at: now + self.deps.sso.login_ttl,
            used_at: None,
            created_at: now,
        };
        let record = Record::new("auth.sso.start").target("sso_connection", connection.id);
        self.record_login_start(&mut *tx, &login, record).await?;
        tx.commit().await?;
        Ok(url)
    }

    /// Finishes an OIDC login: the state must be one Karen issued, unexpired
    /// and unused (it is spent at once, whatever follows); the code is
    /// exchanged with the PKCE verifier and the ID token verified.
    pub async fn finish_oidc(
        &self,
        callback: OidcCallback,
        client: &ClientInfo,
    ) -> Result<TokenPair> {
        let oidc = self.oidc()?.clone();
        let ip = ip_key(client);
        let ReturningLogin {
            tenant,
            login,
            connection,
            now,
        } = self
            .resume_login(Kind::SsoState, callback.state.trim(), SsoKind::Oidc, &ip)
            .await?;
        let tenant = tenant.id;
        if callback.error.is_some() {
            return Err(self
                .refuse(tenant, None, SsoFailure::ProviderError, &ip)
                .await);
        }
        let Some(code) = callback.code.filter(|c| !c.is_empty() && c.len() <= 2048) else {
            return Err(Error::BadRequest(
                "the callback needs the 'code' the identity provider sends".into(),
            ));
        };
        let settings = oidc_settings(&connection)?;
        let secret = connection
            .client_secret
            .clone()
            .ok_or_else(|| Error::internal("SSO connection without a client secret"))?;
        // The nonce itself is not stored: the ID token must carry the one
        // whose digest this login holds.
        let nonce_matches = |nonce: &str| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                &credentials::hash(nonce).0,
                &login.nonce_hash.0,
            )
            .is_ok()
        };
        let redemption = CodeRedemption {
            connection_id: connection.id,
            issuer: &settings.issuer,
            client_id: &settings.client_id,
            client_secret: &secret,
            redirect_uri: &login.redirect_uri,
            code: &code,
            code_verifier: &login.pkce_verifier,
            nonce_matches: &nonce_matches,
            now,
        };
        let identity = match oidc.redeem(&redemption).await {
            Ok(identity) => identity,
            Err(OidcError::Rejected(reason)) => {
                return Err(self.refuse(tenant, None, reason, &ip).await);
            }
            Err(error) => {
                tracing::warn!(tenant_id = %tenant, %error, "sso code exchange failed at the provider");
                return Err(self.provider_failed(tenant, error).await);
            }
        };
        self.complete_login(tenant, &connection, identity, client)
            .await
    }

    /// The organisation a login starts at, named by `slug`. A malformed slug,
    /// an unknown organisation and an inactive one answer like one without
    /// a connection.
    pub(super) async fn login_tenant(&self, slug: &str) -> Result<Tenant> {
        let slug = Slug::parse(slug.trim()).map_err(|_| no_connection())?;
        let mut platform = self.deps.store.platform().await?;
        let tenant = platform.tenant_by_slug(&slug).await?;
        platform.commit().await?;
        tenant
            .filter(|t| t.status == TenantStatus::Active)
            .ok_or_else(no_connection)
    }

    /// Records a login on its way to the provider and audits its start.
    pub(super) async fn record_login_start(
        &self,
        tx: &mut dyn TenantTx,
        login: &SsoLoginState,
        record: Record,
    ) -> Result<()> {
        // Housekeeping: logins never finished are of no use after they expire.
        tx.sso().purge_states(login.created_at).await?;
        tx.sso().insert_state(login).await?;
        self.deps
            .audit(tx, Actor::System(SystemReason::Login), record)
            .await
    }

    /// A login coming back from the provider with `presented`, a credential
    /// of `credential` kind: it must name a pending login Karen issued at an
    /// active organisation, unexpired and unused (spent at once, whatever
    /// follows), whose connection of `kind` is still the enabled one.
    pub(super) async fn resume_login(
        &self,
        credential: Kind,
        presented: &str,
        kind: SsoKind,
        ip: &Option<CacheKey>,
    ) -> Result<ReturningLogin> {
        self.auth.check_ip(ip.as_ref()).await?;
        let refuse_state = async || {
            self.auth.note_ip_failure(ip.as_ref()).await;
            Error::SsoFailed(SsoFailure::State)
        };
        let Ok(presented) = credentials::parse(credential, presented) else {
            return Err(refuse_state().await);
        };
        let tenant_id = TenantId::from_uuid(presented.ids[0]);
        let id = SsoStateId::from_uuid(presented.ids[1]);
        let mut platform = self.deps.store.platform().await?;
        let tenant = platform.tenant_by_id(tenant_id).await?;
        platform.commit().await?;
        let Some(tenant) = tenant.filter(|t| t.status == TenantStatus::Active) else {
            return Err(refuse_state().await);
        };

        let now = self.deps.clock.now();
        let mut tx = self.deps.store.tenant(scope(tenant_id)).await?;
        let login = tx
            .sso()
            .state(id)
            .await?
            .filter(|s| presented.matches(&s.state_hash));
        let Some(login) = login else {
            drop(tx);
            return Err(self.refuse(tenant_id, None, SsoFailure::State, ip).await);
        };
        let fresh = login.used_at.is_none() && login.expires_at > now;
        // Spent now, committed now: a replay finds it used even if this login fails.
        let spent = fresh && tx.sso().spend_state(id, now).await?;
        let connection = tx
            .sso()
            .connection(kind)
            .await?
            .filter(|c| c.enabled && c.id == login.connection_id);
        tx.commit().await?;
        let Some(connection) = connection.filter(|_| spent) else {
            return Err(self.refuse(tenant_id, None, SsoFailure::State, ip).await);
        };
        Ok(ReturningLogin {
            tenant,
            login,
            connection,
            now,
        })
    }

    /// The part of a login every protocol shares, from a verified identity:
    /// the linked user (or a new one), roles from the mapping, a session.
    pub async fn complete_login(
        &self,
        tenant: TenantId,
        connection: &SsoConnection,
        identity: ExternalIdentity,
        client: &ClientInfo,
    ) -> Result<TokenPair> {
        let ip = ip_key(client);
        let mut tx = self.deps.store.tenant(scope(tenant)).await?;
        match self
            .link_and_open(&mut *tx, connection, &identity, client)
            .await?
        {
            Ok((pair, roles_changed)) => {
                tx.commit().await?;
                if roles_changed {
                    self.deps.access_changed(tenant).await;
                }
                Ok(pair)
            }
            Err(refusal) => {
                drop(tx);
                Err(match refusal {
                    Refusal::Sso(reason, user) => self.refuse(tenant, user, reason, &ip).await,
                    Refusal::Disabled(user) => {
                        let mut tx = self.deps.store.tenant(scope(tenant)).await?;
                        self.auth
                            .record_refusal_as(
                                &mut *tx,
                                "auth.sso.login.failed",
                                Some(user),
                                Outcome::Denied,
                            )
                            .await?;
                        tx.commit().await?;
                        Error::UserDisabled
                    }
                })
            }
        }
    }

    async fn link_and_open(
        &self,
        tx: &mut dyn TenantTx,
        connection: &SsoConnection,
        identity: &ExternalIdentity,
        client: &ClientInfo,
    ) -> Result<std::result::Result<(TokenPair, bool), Refusal>> {
        let now = self.deps.clock.now();
        let tenant = tx.tenant().await?;
        tenant.ensure_usable()?;
        let custom = tx.roles().list_custom_roles().await?;
        // Mapped roles that no longer exist (a custom role deleted since) grant nothing.
        let mapped: Vec<RoleName> = connection
            .role_mapping
            .map(&identity.claims)
            .into_iter()
            .filter(|role| {
                karen_domain::BuiltinRole::from_name(role.as_str()).is_some()
                    || custom.iter().any(|c| &c.name == role)
            })
            .collect();
        let linked = tx.sso().identity(connection.id, &identity.subject).await?;
        let (user, roles_changed) = match linked {
            Some(link) => {
                let mut user = tx
                    .users()
                    .user_by_id(link.user_id)
                    .await?
                    .ok_or_else(|| Error::internal("SSO identity linked to a missing user"))?;
                if user.status == UserStatus::Disabled {
                    return Ok(Err(Refusal::Disabled(user.id)));
                }
                let mut roles = mapped;
                if has_owner(&user.roles) {
                    // Owners are managed in Karen, never through the provider.
                    roles.push(RoleName::parse(karen_domain::BuiltinRole::Owner.name())?);
                } else if roles.is_empty() {
                    return Ok(Err(Refusal::Sso(SsoFailure::NoRole, Some(user.id))));
                }
                roles.sort();
                let mut current = user.roles.clone();
                current.sort();
                let changed = roles != current;
                if changed {
                    let before = json!({ "roles": user.roles });
                    tx.users().set_roles(user.id, &roles).await?;
                    user.roles = roles;
                    user.updated_at = now;
                    tx.users().update_user(&user).await?;
                    let record = Record::new("user.roles.sync")
                        .target("user", user.id)
                        .before(&before)
                        .after(&json!({ "roles": user.roles, "source": "sso" }));
                    self.deps
                        .audit(tx, Actor::System(SystemReason::Login), record)
                        .await?;
                }
                tx.sso()
                    .touch_identity(connection.id, &identity.subject, now)
                    .await?;
                (user, changed)
            }
            None => match self
                .create_user(tx, &tenant, connection, identity, mapped)
                .await?
            {
                Ok(user) => (user, false),
                Err(refusal) => return Ok(Err(refusal)),
            },
        };
        let pair = self
            .auth
            .open_session(tx, tenant.id, user.id, client, now, "sso")
            .await?;
        let record = Record::new("auth.sso.login")
            .target("user", user.id)
            .after(&json!({
                "connection": connection.id.to_string(),
                "kind": connection.kind.as_str(),
                "subject": identity.subject,
                "roles": user.roles,
            }));
        self.deps.audit(tx, Actor::User(user.id), record).await?;
        tracing::info!(tenant_id = %tenant.id, user_id = %user.id, "sso login succeeded");
        Ok(Ok((pair, roles_changed)))
    }

    /// Just-in-time creation of the user behind a first login.
    async fn create_user(
        &self,
        tx: &mut dyn TenantTx,
        tenant: &Tenant,
        connection: &SsoConnection,
        identity: &ExternalIdentity,
        roles: Vec<RoleName>,
    ) -> Result<std::result::Result<User, Refusal>> {
        let refuse = |reason| Ok(Err(Refusal::Sso(reason, None)));
        let email = identity
            .email
            .as_deref()
            .filter(|_| identity.email_verified)
            .and_then(|e| Email::parse(e).ok());
        let Some(email) = email else {
            return refuse(SsoFailure::Email);
        };
        if !tenant.settings.allows_email(&email) {
            return refuse(SsoFailure::EmailDomain);
        }
        // Matching is by subject: an existing account with this email is not
        // taken over by whoever the provider says owns the address.
        if tx.users().user_by_email(&email).await?.is_some() {
            return refuse(SsoFailure::EmailInUse);
        }
        if roles.is_empty() {
            return refuse(SsoFailure::NoRole);
        }
        let now = self.deps.clock.now();
        let user = User {
            id: UserId::generate(),
            tenant_id: tenant.id,
            email,
            display_name: identity
                .name
                .as_deref()
                .and_then(|n| DisplayName::parse(n).ok()),
            status: UserStatus::Active,
            roles,
            password_hash: None,
            login_failures: LoginFailures::default(),
            sessions_valid_after: now,
            last_login_at: None,
            created_at: now,
            updated_at: now,
        };
        tx.users().insert_user(&user).await?;
        tx.sso()
            .insert_identity(&SsoIdentity {
                tenant_id: tenant.id,
                connection_id: connection.id,
                subject: identity.subject.clone(),
                user_id: user.id,
                created_at: now,
                last_login_at: now,
            })
            .await?;
        let record = Record::new("user.create")
            .target("user", user.id)
            .after(&json!({
                "email": user.email.as_str(),
                "roles": user.roles,
                "source": "sso",
                "connection": connection.id.to_string(),
            }));
        self.deps
            .audit(tx, Actor::System(SystemReason::Login), record)
            .await?;
        Ok(Ok(user))
    }

    /// Records a refused login (`auth.sso.login.failed` with the reason) in a
    /// transaction of its own and counts it against the client's address.
    pub(super) async fn refuse(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        reason: SsoFailure,
        ip: &Option<CacheKey>,
    ) -> Error {
        self.auth.note_ip_failure(ip.as_ref()).await;
        match self.record_failure(tenant, user, reason.as_str()).await {
            Ok(()) => Error::SsoFailed(reason),
            Err(recording) => recording,
        }
    }

    /// Records a login the identity provider could not complete (reason
    /// `provider_unavailable`). The user is not at fault: nothing is counted
    /// against their address.
    async fn provider_failed(&self, tenant: TenantId, error: OidcError) -> Error {
        match self
            .record_failure(tenant, None, "provider_unavailable")
            .await
        {
            Ok(()) => provider_problem(error),
            Err(recording) => recording,
        }
    }

    /// `auth.sso.login.failed` with `reason`, in a transaction of its own.
    async fn record_failure(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        reason: &str,
    ) -> Result<()> {
        let mut tx = self.deps.store.tenant(scope(tenant)).await?;
        let mut record = Record::new("auth.sso.login.failed")
            .outcome(Outcome::Failure)
            .after(&json!({ "reason": reason }));
        if let Some(user) = user {
            record = record.target("user", user);
        }
        self.deps
            .audit(&mut *tx, Actor::System(SystemReason::Login), record)
            .await?;
        tx.commit().await
    }
}

/// A provider that cannot be used right now: the gateway's fault, not the user's.
fn provider_problem(error: OidcError) -> Error {
    match error {
        OidcError::Rejected(reason) => Error::SsoFailed(reason),
        OidcError::Refused(message) | OidcError::Provider(message) => {
            Error::Upstream(format!("the identity provider cannot be used: {message}"))
        }
    }
}
