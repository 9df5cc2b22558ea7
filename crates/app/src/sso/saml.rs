//! SAML 2.0 single sign-on: the tenant's connection (its IdP from metadata,
//! or from a certificate and SSO URL), our SP metadata, the SP-initiated
//! start (HTTP-Redirect or HTTP-POST binding) and the assertion consumer
//! service. The protocol checks are the [`SamlServiceProvider`] port's; this
//! module keeps the state they need: the pending login (the RelayState is a
//! single-use `krq_` credential naming it; the AuthnRequest ID is derived
//! from its id, so InResponseTo must name this very login) and the replay
//! cache of consumed assertion IDs. What follows a verified assertion is the
//! login every protocol shares ([`SsoService::complete_login`]).
//!
//! Every tenant has its own service provider: entity ID
//! `<public URL>/v1/auth/sso/saml/<slug>/metadata` (the Audience an
//! assertion must name, so one tenant's response is refused at another), and
//! one assertion consumer URL `<public URL>/v1/auth/sso/saml/acs` for all.

use std::sync::Arc;

use karen_domain::permission::Permission;
use karen_domain::ports::SamlServiceProvider;
use karen_domain::saml::{SamlAuthnRequest, SamlBinding, SamlRefusal, SamlSettings, SamlSp};
use karen_domain::sso::{
    ExternalIdentity, RoleMapping, SsoConnection, SsoFailure, SsoKind, SsoLoginState,
};
use karen_domain::values::{Email, Slug};
use karen_domain::{Error, Result, SsoConnectionId, SsoStateId, TenantContext};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::login::{ReturningLogin, enabled_connection, public_url_missing, scope};
use super::{ConnectionChange, SsoService, settings_config, stored_settings};
use crate::audit::Record;
use crate::auth::{ClientInfo, TokenPair, ip_key};
use crate::credentials::{self, Kind};

/// The assertion consumer service path (appended to the public URL).
pub const SAML_ACS_PATH: &str = "/v1/auth/sso/saml/acs";

/// The path of a tenant's SP metadata, which is also its SP entity ID.
pub fn saml_metadata_path(slug: &str) -> String {
    format!("/v1/auth/sso/saml/{slug}/metadata")
}

/// Where the IdP's settings come from.
pub enum SamlIdpSource {
    /// The IdP's metadata XML.
    Metadata(String),
    /// What an administrator pastes when the IdP has no metadata.
    Certificate {
        entity_id: String,
        sso_url: String,
        /// The binding of `sso_url`.
        binding: SamlBinding,
        certificate_pem: String,
    },
}

/// A SAML connection to create or replace.
pub struct SamlConnectionInput {
    pub idp: SamlIdpSource,
    /// The binding logins use when the IdP offers both (default: redirect).
    pub binding: Option<SamlBinding>,
    pub email_attribute: Option<String>,
    pub name_attribute: Option<String>,
    /// `claim` names the attribute holding groups or roles.
    pub role_mapping: RoleMapping,
    pub enabled: bool,
}

/// A tenant's SAML connection as an administrator sees it.
#[derive(Debug, Clone)]
pub struct SamlConnection {
    pub id: SsoConnectionId,
    pub settings: SamlSettings,
    pub role_mapping: RoleMapping,
    pub enabled: bool,
    /// Our entity ID, metadata URL and ACS URL, when the public URL is known.
    pub sp_entity_id: Option<String>,
    pub acs_url: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What the IdP posts to the ACS.
pub struct SamlAcsPost {
    pub saml_response: String,
    pub relay_state: Option<String>,
}

fn saml_settings(connection: &SsoConnection) -> Result<SamlSettings> {
    stored_settings(connection, "SAML")
}

/// The AuthnRequest ID of a login: an xs:ID made of its id.
fn request_id(login: SsoStateId) -> String {
    format!("_{}", login.as_uuid().simple())
}

/// A refused IdP configuration: 422 naming the field and the SAML code.
fn config_problem(field: &str, refusal: SamlRefusal) -> Error {
    Error::invalid(Some(field), refusal.to_string())
}

impl SsoService {
    fn saml(&self) -> Result<Arc<dyn SamlServiceProvider>> {
        self.deps
            .sso
            .saml
            .clone()
            .ok_or(Error::FeatureDisabled("sso"))
    }

    fn sp(base: &str, slug: &str) -> SamlSp {
        SamlSp {
            entity_id: format!("{base}{}", saml_metadata_path(slug)),
            acs_url: format!("{base}{SAML_ACS_PATH}"),
        }
    }

    fn saml_view(&self, connection: &SsoConnection, slug: &str) -> Result<SamlConnection> {
        let sp = self.public_base(None).map(|base| Self::sp(&base, slug));
        Ok(SamlConnection {
            id: connection.id,
            settings: saml_settings(connection)?,
            role_mapping: connection.role_mapping.clone(),
            enabled: connection.enabled,
            sp_entity_id: sp.as_ref().map(|sp| sp.entity_id.clone()),
            acs_url: sp.map(|sp| sp.acs_url),
            created_at: connection.created_at,
            updated_at: connection.updated_at,
        })
    }

    /// The tenant's SAML connection.
    pub async fn saml_connection(&self, ctx: &TenantContext) -> Result<SamlConnection> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let connection = tx.sso().connection(SsoKind::Saml).await?;
        let tenant = tx.tenant().await?;
        tx.commit().await?;
        let connection = connection.ok_or(Error::NotFound("SSO connection"))?;
        self.saml_view(&connection, tenant.slug.as_str())
    }

    /// Creates or replaces the tenant's SAML connection. The IdP's metadata
    /// (or certificate) must parse and hold a usable signing key; mapped
    /// roles must exist and grant nothing the administrator lacks.
    pub async fn put_saml_connection(
        &self,
        ctx: &TenantContext,
        input: SamlConnectionInput,
    ) -> Result<SamlConnection> {
        ctx.require(Permission::TenantManage)?;
        let saml = self.saml()?;
        input.role_mapping.validate()?;
        let mut settings = match &input.idp {
            SamlIdpSource::Metadata(xml) => saml
                .settings_from_metadata(xml)
                .map_err(|r| config_problem("idp_metadata", r))?,
            SamlIdpSource::Certificate {
                entity_id,
                sso_url,
                binding,
                certificate_pem,
            } => saml
                .settings_from_certificate(
                    entity_id.trim(),
                    sso_url.trim(),
                    *binding,
                    certificate_pem,
                )
                .map_err(|r| config_problem("certificate_pem", r))?,
        };
        if let Some(binding) = input.binding {
            settings.binding = binding;
        }
        settings.binding = settings.binding_for(None);
        settings.email_attribute = input.email_attribute;
        settings.name_attribute = input.name_attribute;
        settings.validate()?;

        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let existing = self
            .existing_for_put(
                &mut *tx,
                ctx,
                SsoKind::Saml,
                &input.role_mapping,
                input.enabled,
            )
            .await?;
        let tenant = tx.tenant().await?;
        let change = ConnectionChange {
            kind: SsoKind::Saml,
            config: settings_config(&settings, "SAML")?,
            client_secret: None,
            role_mapping: input.role_mapping,
            enabled: input.enabled,
        };
        let connection = self
            .store_connection(&mut *tx, ctx, existing.as_ref(), change)
            .await?;
        tx.commit().await?;
        self.saml_view(&connection, tenant.slug.as_str())
    }

    /// Removes the tenant's SAML connection and the links of its identities
    /// (the users stay).
    pub async fn delete_saml_connection(&self, ctx: &TenantContext) -> Result<()> {
        self.delete_connection(ctx, SsoKind::Saml).await
    }

    /// The SP metadata of organisation `slug`. It depends on the slug and
    /// the public URL only, so it is served for any well-formed slug: it can
    /// be given to the IdP before the connection exists, and says nothing
    /// about which organisations exist.
    pub fn saml_metadata(&self, slug: &str, request_origin: Option<&str>) -> Result<String> {
        let saml = self.saml()?;
        let slug = Slug::parse(slug.trim()).map_err(|_| Error::NotFound("organisation"))?;
        let base = self
            .public_base(request_origin)
            .ok_or_else(public_url_missing)?;
        saml.sp_metadata(&Self::sp(&base, slug.as_str()))
    }

    /// Starts a SAML login for organisation `slug`: records a single-use
    /// pending login and returns the AuthnRequest in the binding asked for
    /// (or the connection's, if the IdP offers it). An unknown organisation
    /// answers exactly like one without SAML.
    pub async fn start_saml(
        &self,
        slug: &str,
        binding: Option<SamlBinding>,
        request_origin: Option<&str>,
    ) -> Result<SamlAuthnRequest> {
        let saml = self.saml()?;
        let tenant = self.login_tenant(slug).await?;
        let base = self
            .public_base(request_origin)
            .ok_or_else(public_url_missing)?;
        let sp = Self::sp(&base, tenant.slug.as_str());
        let mut tx = self.deps.store.tenant(scope(tenant.id)).await?;
        let connection = enabled_connection(&mut *tx, SsoKind::Saml).await?;
        let settings = saml_settings(&connection)?;
        let now = self.deps.clock.now();
        let id = SsoStateId::generate();
        let relay = credentials::mint(Kind::SamlRelay, &[tenant.id.as_uuid(), id.as_uuid()])?;
        let request_id = request_id(id);
        let request = saml.authn_request(
            &sp,
            &settings,
            settings.binding_for(binding),
            &request_id,
            relay.text.expose_secret(),
            now,
        )?;
        let login = SsoLoginState {
            id,
            tenant_id: tenant.id,
            connection_id: connection.id,
            state_hash: relay.hash,
            nonce_hash: credentials::hash(&request_id),
            // SAML has no PKCE; the column is sealed either way.
            pkce_verifier: SecretString::from(String::new()),
            redirect_uri: sp.acs_url,
            expires_at: now + self.deps.sso.login_ttl,
            used_at: None,
            created_at: now,
        };
        let record = Record::new("auth.sso.start")
            .target("sso_connection", connection.id)
            .after(&json!({ "kind": "saml", "binding": settings.binding_for(binding).as_str() }));
        self.record_login_start(&mut *tx, &login, record).await?;
        tx.commit().await?;
        Ok(request)
    }

    /// The assertion consumer service: the RelayState must name a pending
    /// login Karen issued, unexpired and unused (spent at once, whatever
    /// follows); the response must verify against that login's tenant and
    /// request; its assertion ID must not have been consumed before.
    pub async fn finish_saml(&self, post: SamlAcsPost, client: &ClientInfo) -> Result<TokenPair> {
        let saml = self.saml()?;
        let ip = ip_key(client);
        let relay = post.relay_state.as_deref().unwrap_or_default().trim();
        let ReturningLogin {
            tenant,
            login,
            connection,
            now,
        } = self
            .resume_login(Kind::SamlRelay, relay, SsoKind::Saml, &ip)
            .await?;
        let tenant_id = tenant.id;
        let id = login.id;

        // The ACS URL is the one this login's request named; the audience is
        // this tenant's entity ID on the same base.
        let base = login
            .redirect_uri
            .strip_suffix(SAML_ACS_PATH)
            .ok_or_else(|| Error::internal("SAML login without an ACS URL"))?;
        let sp = Self::sp(base, tenant.slug.as_str());
        let settings = saml_settings(&connection)?;
        let assertion = match saml.verify_response(
            post.saml_response.trim(),
            &sp,
            &settings,
            &request_id(id),
            now,
        ) {
            Ok(assertion) => assertion,
            Err(refusal) => {
                tracing::info!(tenant_id = %tenant_id, code = refusal.code, "saml response refused");
                return Err(self.refuse(tenant_id, None, refusal.failure, &ip).await);
            }
        };
        let mut tx = self.deps.store.tenant(scope(tenant_id)).await?;
        let first_use = tx
            .sso()
            .consume_assertion(&assertion.assertion_id, assertion.not_on_or_after, now)
            .await?;
        tx.commit().await?;
        if !first_use {
            return Err(self.refuse(tenant_id, None, SsoFailure::Replay, &ip).await);
        }
        let identity = external_identity(&connection, &settings, assertion);
        self.complete_login(tenant_id, &connection, identity, client)
            .await
    }
}

/// The verified assertion as the identity the shared login starts from:
/// the NameID is the subject; attributes are the claims of the role mapping.
fn external_identity(
    connection: &SsoConnection,
    settings: &SamlSettings,
    assertion: karen_domain::saml::SamlAssertion,
) -> ExternalIdentity {
    let first = |name: &str| {
        assertion
            .attributes
            .get(name)
            .and_then(|values| values.first())
            .cloned()
    };
    let email = match &settings.email_attribute {
        Some(attribute) => first(attribute),
        None if assertion.name_id_is_email || Email::parse(&assertion.name_id).is_ok() => {
            Some(assertion.name_id.clone())
        }
        None => first("email").or_else(|| first("mail")),
    };
    let name = settings.name_attribute.as_deref().and_then(first);
    let claims = assertion
        .attributes
        .iter()
        .map(|(name, values)| {
            let values = values.iter().cloned().map(Value::String).collect();
            (name.clone(), Value::Array(values))
        })
        .collect();
    ExternalIdentity {
        connection_id: connection.id,
        subject: assertion.name_id,
        email,
        // The IdP vouches for the address it asserts (SAML has no flag for it).
        email_verified: true,
        name,
        claims,
    }
}
