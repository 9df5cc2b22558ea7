//! SCIM Users: every account of the tenant not deleted through SCIM, with
//! `userName` = the sign-in email. Created accounts have no password (they
//! sign in with SSO); deprovisioning disables the account and ends its
//! sessions at once.

use karen_domain::ports::TenantTx;
use karen_domain::scim::filter::{self, FilterAttribute};
use karen_domain::scim::patch::{self, PatchOperation};
use karen_domain::scim::resource::{UserAttributes, UserDraft};
use karen_domain::scim::{ScimErrorType, ScimUserRecord, USER_SCHEMA, check_if_match};
use karen_domain::user::{LoginFailures, User, UserStatus};
use karen_domain::values::{DisplayName, Email, printable};
use karen_domain::{Error, Result, TenantContext, UserId};
use time::OffsetDateTime;

use super::{
    ListQuery, ScimList, ScimService, ScimUserView, ceiling, check_body_id, conflict_as_taken,
    ensure_not_last_owner, uniqueness, within,
};
use crate::audit::Record;
use crate::auth::end_all_sessions;
use crate::users::{permissions_of_user, resolve_roles};

/// The user `id` as SCIM shows it (`None`: missing, or deleted through SCIM).
async fn visible(tx: &mut dyn TenantTx, id: UserId) -> Result<Option<ScimUserView>> {
    let Some(user) = tx.users().user_by_id(id).await? else {
        return Ok(None);
    };
    let scim = tx.scim().scim_user(id).await?;
    if scim.as_ref().is_some_and(|s| s.deleted_at.is_some()) {
        return Ok(None);
    }
    Ok(Some(ScimUserView { user, scim }))
}

async fn existing(tx: &mut dyn TenantTx, id: UserId) -> Result<ScimUserView> {
    visible(tx, id).await?.ok_or(Error::NotFound("user"))
}

/// The attributes a view shows.
pub(super) fn attributes(view: &ScimUserView) -> UserAttributes {
    let scim = view.scim.as_ref();
    UserAttributes {
        user_name: view.user.email.clone(),
        external_id: scim.and_then(|s| s.external_id.clone()),
        display_name: view
            .user
            .display_name
            .as_ref()
            .map(|d| d.as_str().to_owned()),
        given_name: scim.and_then(|s| s.given_name.clone()),
        family_name: scim.and_then(|s| s.family_name.clone()),
        emails: scim.map(|s| s.emails.clone()).unwrap_or_default(),
        active: view.user.status == UserStatus::Active,
    }
}

/// A user in audit diffs.
fn audit_json(view: &ScimUserView) -> serde_json::Value {
    let a = attributes(view);
    serde_json::json!({
        "userName": a.user_name.as_str(),
        "externalId": a.external_id,
        "displayName": a.display_name,
        "active": a.active,
        "emails": a.emails.iter().map(|e| e.value.as_str()).collect::<Vec<_>>(),
    })
}

fn record_of(
    view_scim: Option<&ScimUserRecord>,
    user: &User,
    attrs: &UserAttributes,
    now: OffsetDateTime,
) -> ScimUserRecord {
    ScimUserRecord {
        tenant_id: user.tenant_id,
        user_id: user.id,
        external_id: attrs.external_id.clone(),
        given_name: attrs.given_name.clone(),
        family_name: attrs.family_name.clone(),
        emails: attrs.emails.clone(),
        version: view_scim.map_or(0, |s| s.version) + 1,
        created_at: view_scim.map_or(now, |s| s.created_at),
        updated_at: now,
        deleted_at: None,
    }
}

fn karen_display_name(attrs: &UserAttributes) -> Result<Option<DisplayName>> {
    attrs
        .karen_display_name()
        .map(|n| DisplayName::parse(&n))
        .transpose()
        .map_err(|e| Error::scim(ScimErrorType::InvalidValue, e.to_string()))
}

async fn check_domain(tx: &mut dyn TenantTx, email: &Email) -> Result<()> {
    let tenant = tx.tenant().await?;
    if tenant.settings.allows_email(email) {
        return Ok(());
    }
    Err(Error::scim(
        ScimErrorType::InvalidValue,
        format!(
            "this organisation only accepts emails in: {}",
            tenant.settings.allowed_email_domains.join(", ")
        ),
    ))
}

fn taken(email: &Email) -> Error {
    uniqueness(format!(
        "a user with userName {} already exists in this organisation",
        printable(email.as_str(), 120)
    ))
}

impl ScimService {
    /// One page of users, optionally filtered by `userName` or `externalId`.
    pub async fn list_users(
        &self,
        ctx: &TenantContext,
        query: &ListQuery,
    ) -> Result<ScimList<ScimUserView>> {
        ctx.require(karen_domain::Permission::ScimProvision)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let list = match &query.filter {
            None => {
                let (total, ids) = tx
                    .scim()
                    .list_scim_users(query.start_index - 1, query.count)
                    .await?;
                let mut items = Vec::with_capacity(ids.len());
                for id in ids {
                    items.extend(visible(&mut *tx, id).await?);
                }
                ScimList {
                    total,
                    start_index: query.start_index,
                    items,
                }
            }
            Some(text) => {
                let allowed = [FilterAttribute::UserName, FilterAttribute::ExternalId];
                let wanted = filter::parse(text, USER_SCHEMA, &allowed)?;
                let ids = match wanted.attribute {
                    FilterAttribute::UserName => match Email::parse(&wanted.value) {
                        Ok(email) => tx
                            .users()
                            .user_by_email(&email)
                            .await?
                            .map(|u| u.id)
                            .into_iter()
                            .collect(),
                        // Not an email: no user can have it.
                        Err(_) => Vec::new(),
                    },
                    _ => tx.scim().scim_users_by_external_id(&wanted.value).await?,
                };
                let mut all = Vec::with_capacity(ids.len());
                for id in ids {
                    all.extend(visible(&mut *tx, id).await?);
                }
                ScimList::page_of(all, query)
            }
        };
        tx.commit().await?;
        Ok(list)
    }

    /// One user.
    pub async fn get_user(&self, ctx: &TenantContext, id: UserId) -> Result<ScimUserView> {
        ctx.require(karen_domain::Permission::ScimProvision)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let view = existing(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Creates a user (or brings back one deleted through SCIM, with the same id).
    pub async fn create_user(
        &self,
        ctx: &TenantContext,
        attrs: UserAttributes,
    ) -> Result<ScimUserView> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let ceiling = ceiling(&mut *tx, ctx).await?;
        check_domain(&mut *tx, &attrs.user_name).await?;
        let now = self.deps.clock.now();
        let view = match tx.users().user_by_email(&attrs.user_name).await? {
            Some(user) => {
                let scim = tx.scim().scim_user(user.id).await?;
                if scim.as_ref().is_none_or(|s| s.deleted_at.is_none()) {
                    return Err(taken(&attrs.user_name));
                }
                let view = ScimUserView { user, scim };
                let changed = self
                    .store_user(&mut *tx, ctx, ceiling, view, &attrs, now)
                    .await?;
                changed.0
            }
            None => {
                let tenant = tx.tenant().await?;
                let (roles, granted) =
                    resolve_roles(&mut *tx, &[tenant.settings.default_role.to_string()]).await?;
                within(ceiling, granted, "giving new users the default role")?;
                let user = User {
                    id: UserId::generate(),
                    tenant_id: ctx.tenant_id(),
                    email: attrs.user_name.clone(),
                    display_name: karen_display_name(&attrs)?,
                    status: if attrs.active {
                        UserStatus::Active
                    } else {
                        UserStatus::Disabled
                    },
                    roles,
                    // Provisioned users sign in with single sign-on.
                    password_hash: None,
                    login_failures: LoginFailures::default(),
                    sessions_valid_after: now,
                    last_login_at: None,
                    created_at: now,
                    updated_at: now,
                };
                tx.users()
                    .insert_user(&user)
                    .await
                    .map_err(|e| conflict_as_taken(e, || taken(&attrs.user_name)))?;
                let record = record_of(None, &user, &attrs, now);
                tx.scim().put_scim_user(&record).await?;
                ScimUserView {
                    user,
                    scim: Some(record),
                }
            }
        };
        let audit = Record::new("scim.user.create")
            .target("user", view.user.id)
            .after(&audit_json(&view));
        self.commit_change(tx, ctx, audit).await?;
        Ok(view)
    }

    /// Replaces a user's attributes (PUT).
    pub async fn replace_user(
        &self,
        ctx: &TenantContext,
        id: UserId,
        draft: UserDraft,
        if_match: Option<&str>,
    ) -> Result<ScimUserView> {
        check_body_id(draft.id.as_deref(), &id.to_string())?;
        let attrs = draft.finish()?;
        self.change_user(ctx, id, if_match, "scim.user.replace", |_| Ok(attrs))
            .await
    }

    /// Applies PATCH operations to a user.
    pub async fn patch_user(
        &self,
        ctx: &TenantContext,
        id: UserId,
        operations: &[PatchOperation],
        if_match: Option<&str>,
    ) -> Result<ScimUserView> {
        self.change_user(ctx, id, if_match, "scim.user.patch", |view| {
            let mut draft = UserDraft::from(attributes(view));
            draft.id = Some(id.to_string());
            patch::apply_to_user(&mut draft, operations)?;
            draft.finish()
        })
        .await
    }

    async fn change_user(
        &self,
        ctx: &TenantContext,
        id: UserId,
        if_match: Option<&str>,
        action: &'static str,
        change: impl FnOnce(&ScimUserView) -> Result<UserAttributes>,
    ) -> Result<ScimUserView> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let ceiling = ceiling(&mut *tx, ctx).await?;
        let view = existing(&mut *tx, id).await?;
        check_if_match(if_match, &view.etag())?;
        let attrs = change(&view)?;
        let before = audit_json(&view);
        let (after, sessions_ended) = self
            .store_user(&mut *tx, ctx, ceiling, view, &attrs, self.deps.clock.now())
            .await?;
        let mut after_json = audit_json(&after);
        if let Some(ended) = sessions_ended {
            after_json["sessions_ended"] = serde_json::json!(ended);
        }
        let audit = Record::new(action)
            .target("user", id)
            .before(&before)
            .after(&after_json);
        self.commit_change(tx, ctx, audit).await?;
        if sessions_ended.is_some() {
            tracing::info!(tenant_id = %ctx.tenant_id(), user_id = %id, "user deprovisioned through scim; sessions ended");
        }
        Ok(after)
    }

    /// Writes `attrs` over an existing user; deactivating ends its sessions
    /// (returns how many were live).
    async fn store_user(
        &self,
        tx: &mut dyn TenantTx,
        ctx: &TenantContext,
        ceiling: karen_domain::PermissionSet,
        view: ScimUserView,
        attrs: &UserAttributes,
        now: OffsetDateTime,
    ) -> Result<(ScimUserView, Option<u64>)> {
        let id = view.user.id;
        within(
            ceiling,
            permissions_of_user(tx, &view.user).await?,
            "managing this user",
        )?;
        if attrs.user_name != view.user.email {
            check_domain(tx, &attrs.user_name).await?;
            if tx.users().user_by_email(&attrs.user_name).await?.is_some() {
                return Err(taken(&attrs.user_name));
            }
        }
        let deactivate = view.user.status == UserStatus::Active && !attrs.active;
        let mut ended = None;
        if deactivate {
            if ctx.principal().user_id == id {
                return Err(Error::Conflict(
                    "this user owns the API key of this request; deprovisioning them would stop provisioning: use a key of another administrator".into(),
                ));
            }
            ensure_not_last_owner(tx, &view.user).await?;
            ended = Some(end_all_sessions(tx, id, now).await?);
        }
        // end_all_sessions moved the session cut-off: start from the stored record.
        let mut user = tx
            .users()
            .user_by_id(id)
            .await?
            .ok_or(Error::NotFound("user"))?;
        user.email = attrs.user_name.clone();
        user.display_name = karen_display_name(attrs)?;
        user.status = if attrs.active {
            UserStatus::Active
        } else {
            UserStatus::Disabled
        };
        user.updated_at = now;
        tx.users()
            .update_user(&user)
            .await
            .map_err(|e| conflict_as_taken(e, || taken(&attrs.user_name)))?;
        let record = record_of(view.scim.as_ref(), &user, attrs, now);
        tx.scim().put_scim_user(&record).await?;
        Ok((
            ScimUserView {
                user,
                scim: Some(record),
            },
            ended,
        ))
    }

    /// Deletes a user: the account is disabled, its sessions end, it leaves
    /// every group (losing the roles they granted) and SCIM no longer shows it.
    pub async fn delete_user(
        &self,
        ctx: &TenantContext,
        id: UserId,
        if_match: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let ceiling = ceiling(&mut *tx, ctx).await?;
        let view = existing(&mut *tx, id).await?;
        check_if_match(if_match, &view.etag())?;
        let before = audit_json(&view);
        let mut attrs = attributes(&view);
        attrs.active = false;
        let now = self.deps.clock.now();
        let (after, ended) = self
            .store_user(&mut *tx, ctx, ceiling, view, &attrs, now)
            .await?;
        for group in tx.scim().groups_of_user(id).await? {
            tx.scim().remove_group_member(group.id, id).await?;
        }
        self.sync_roles(&mut *tx, ctx, ceiling, id, now).await?;
        if let Some(mut record) = after.scim {
            record.deleted_at = Some(now);
            tx.scim().put_scim_user(&record).await?;
        }
        let audit = Record::new("scim.user.delete")
            .target("user", id)
            .before(&before)
            .after(&serde_json::json!({ "sessions_ended": ended.unwrap_or(0) }));
        self.commit_change(tx, ctx, audit).await?;
        tracing::info!(tenant_id = %ctx.tenant_id(), user_id = %id, "user deleted through scim; account disabled");
        Ok(())
    }
}
