//! SCIM Groups and their members; membership changes keep the members'
//! roles in step with the groups named like roles.

use karen_domain::ports::TenantTx;
use karen_domain::scim::filter::{self, FilterAttribute};
use karen_domain::scim::patch::{self, PatchOperation};
use karen_domain::scim::resource::GroupDraft;
use karen_domain::scim::{GROUP_SCHEMA, ScimErrorType, ScimGroup, check_if_match};
use karen_domain::values::printable;
use karen_domain::{Error, Permission, PermissionSet, Result, ScimGroupId, TenantContext, UserId};
use time::OffsetDateTime;

use super::{
    ListQuery, ScimGroupView, ScimList, ScimService, ceiling, check_body_id, conflict_as_taken,
    uniqueness,
};
use crate::audit::Record;

async fn existing(tx: &mut dyn TenantTx, id: ScimGroupId) -> Result<ScimGroup> {
    tx.scim().group(id).await?.ok_or(Error::NotFound("group"))
}

async fn view(
    tx: &mut dyn TenantTx,
    group: ScimGroup,
    with_members: bool,
) -> Result<ScimGroupView> {
    let members = if with_members {
        Some(tx.scim().group_members(group.id).await?)
    } else {
        None
    };
    Ok(ScimGroupView { group, members })
}

fn taken(name: &str) -> Error {
    uniqueness(format!(
        "a group named '{}' already exists in this organisation",
        printable(name, 80)
    ))
}

/// Checks that every member is a user SCIM shows (a foreign or deleted id
/// answers like a missing one).
async fn check_members(tx: &mut dyn TenantTx, members: &[UserId]) -> Result<()> {
    for id in members {
        let shown = match tx.users().user_by_id(*id).await? {
            Some(_) => tx
                .scim()
                .scim_user(*id)
                .await?
                .is_none_or(|s| s.deleted_at.is_none()),
            None => false,
        };
        if !shown {
            return Err(Error::scim(
                ScimErrorType::InvalidValue,
                format!("no user with id '{id}' in this organisation"),
            ));
        }
    }
    Ok(())
}

fn audit_json(group: &ScimGroup) -> serde_json::Value {
    serde_json::json!({"displayName": group.display_name, "externalId": group.external_id})
}

impl ScimService {
    /// One page of groups, optionally filtered by `displayName` or `externalId`.
    pub async fn list_groups(
        &self,
        ctx: &TenantContext,
        query: &ListQuery,
        with_members: bool,
    ) -> Result<ScimList<ScimGroupView>> {
        ctx.require(Permission::ScimProvision)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let (total, groups, start) = match &query.filter {
            None => {
                let (total, groups) = tx
                    .scim()
                    .list_groups(query.start_index - 1, query.count)
                    .await?;
                (total, groups, true)
            }
            Some(text) => {
                let allowed = [FilterAttribute::DisplayName, FilterAttribute::ExternalId];
                let wanted = filter::parse(text, GROUP_SCHEMA, &allowed)?;
                let found = match wanted.attribute {
                    FilterAttribute::DisplayName => tx
                        .scim()
                        .group_by_display_name(&wanted.value)
                        .await?
                        .into_iter()
                        .collect(),
                    _ => tx.scim().groups_by_external_id(&wanted.value).await?,
                };
                (0, found, false)
            }
        };
        let mut items = Vec::with_capacity(groups.len());
        for group in groups {
            items.push(view(&mut *tx, group, with_members).await?);
        }
        tx.commit().await?;
        Ok(if start {
            ScimList {
                total,
                start_index: query.start_index,
                items,
            }
        } else {
            ScimList::page_of(items, query)
        })
    }

    /// One group.
    pub async fn get_group(
        &self,
        ctx: &TenantContext,
        id: ScimGroupId,
        with_members: bool,
    ) -> Result<ScimGroupView> {
        ctx.require(Permission::ScimProvision)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let group = existing(&mut *tx, id).await?;
        let view = view(&mut *tx, group, with_members).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Creates a group with its members (granting its role, if it names one).
    pub async fn create_group(
        &self,
        ctx: &TenantContext,
        draft: GroupDraft,
    ) -> Result<ScimGroupView> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let ceiling = ceiling(&mut *tx, ctx).await?;
        let display_name = draft
            .display_name
            .ok_or_else(|| Error::scim(ScimErrorType::InvalidValue, "displayName is required"))?;
        if tx
            .scim()
            .group_by_display_name(&display_name)
            .await?
            .is_some()
        {
            return Err(taken(&display_name));
        }
        check_members(&mut *tx, &draft.members).await?;
        let now = self.deps.clock.now();
        let group = ScimGroup {
            id: ScimGroupId::generate(),
            tenant_id: ctx.tenant_id(),
            display_name,
            external_id: draft.external_id,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        tx.scim()
            .insert_group(&group)
            .await
            .map_err(|e| conflict_as_taken(e, || taken(&group.display_name)))?;
        for member in &draft.members {
            tx.scim().add_group_member(group.id, *member, now).await?;
            self.sync_roles(&mut *tx, ctx, ceiling, *member, now)
                .await?;
        }
        let mut after = audit_json(&group);
        after["members_added"] = serde_json::json!(draft.members);
        let audit = Record::new("scim.group.create")
            .target("group", group.id)
            .after(&after);
        self.commit_change(tx, ctx, audit).await?;
        Ok(ScimGroupView {
            group,
            members: Some(draft.members),
        })
    }

    /// Replaces a group's name, external id and members (PUT).
    pub async fn replace_group(
        &self,
        ctx: &TenantContext,
        id: ScimGroupId,
        draft: GroupDraft,
        if_match: Option<&str>,
    ) -> Result<ScimGroupView> {
        check_body_id(draft.id.as_deref(), &id.to_string())?;
        self.change_group(ctx, id, if_match, "scim.group.replace", |_| Ok(draft))
            .await
    }

    /// Applies PATCH operations to a group (members added and removed, renamed…).
    pub async fn patch_group(
        &self,
        ctx: &TenantContext,
        id: ScimGroupId,
        operations: &[PatchOperation],
        if_match: Option<&str>,
    ) -> Result<ScimGroupView> {
        self.change_group(ctx, id, if_match, "scim.group.patch", |mut current| {
            patch::apply_to_group(&mut current, operations)?;
            Ok(current)
        })
        .await
    }

    async fn change_group(
        &self,
        ctx: &TenantContext,
        id: ScimGroupId,
        if_match: Option<&str>,
        action: &'static str,
        change: impl FnOnce(GroupDraft) -> Result<GroupDraft>,
    ) -> Result<ScimGroupView> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let ceiling = ceiling(&mut *tx, ctx).await?;
        let mut group = existing(&mut *tx, id).await?;
        check_if_match(
            if_match,
            &karen_domain::scim::etag(&group.version.to_string()),
        )?;
        let members = tx.scim().group_members(id).await?;
        let current = GroupDraft {
            id: Some(id.to_string()),
            display_name: Some(group.display_name.clone()),
            external_id: group.external_id.clone(),
            members: members.clone(),
        };
        let wanted = change(current)?;
        let before = audit_json(&group);
        let display_name = wanted
            .display_name
            .ok_or_else(|| Error::scim(ScimErrorType::InvalidValue, "displayName is required"))?;
        let renamed = display_name.to_lowercase() != group.role_key();
        if renamed
            && tx
                .scim()
                .group_by_display_name(&display_name)
                .await?
                .is_some_and(|other| other.id != id)
        {
            return Err(taken(&display_name));
        }
        let added: Vec<UserId> = wanted
            .members
            .iter()
            .filter(|m| !members.contains(m))
            .copied()
            .collect();
        let removed: Vec<UserId> = members
            .iter()
            .filter(|m| !wanted.members.contains(m))
            .copied()
            .collect();
        check_members(&mut *tx, &added).await?;
        let now = self.deps.clock.now();
        let read_version = group.version;
        group.display_name = display_name;
        group.external_id = wanted.external_id;
        group.version += 1;
        group.updated_at = now;
        let updated = tx
            .scim()
            .update_group(&group, read_version)
            .await
            .map_err(|e| conflict_as_taken(e, || taken(&group.display_name)))?;
        if !updated {
            // Another request changed the group since it was read: the member
            // lists compared above are stale, so nothing of this one applies.
            return Err(Error::Conflict(
                "the group changed while this request ran; send it again".into(),
            ));
        }
        for member in &added {
            tx.scim().add_group_member(id, *member, now).await?;
        }
        for member in &removed {
            tx.scim().remove_group_member(id, *member).await?;
        }
        // A new name may map to another role: every member's roles follow.
        let touched: Vec<UserId> = if renamed {
            members.iter().chain(added.iter()).copied().collect()
        } else {
            added.iter().chain(removed.iter()).copied().collect()
        };
        self.sync_all(&mut *tx, ctx, ceiling, &touched, now).await?;
        let mut after = audit_json(&group);
        after["members_added"] = serde_json::json!(added);
        after["members_removed"] = serde_json::json!(removed);
        let audit = Record::new(action)
            .target("group", id)
            .before(&before)
            .after(&after);
        self.commit_change(tx, ctx, audit).await?;
        Ok(ScimGroupView {
            group,
            members: Some(wanted.members),
        })
    }

    async fn sync_all(
        &self,
        tx: &mut dyn TenantTx,
        ctx: &TenantContext,
        ceiling: PermissionSet,
        users: &[UserId],
        now: OffsetDateTime,
    ) -> Result<()> {
        for user in users {
            self.sync_roles(tx, ctx, ceiling, *user, now).await?;
        }
        Ok(())
    }

    /// Deletes a group; its members lose the role it granted (unless another
    /// group grants it, or they held it before).
    pub async fn delete_group(
        &self,
        ctx: &TenantContext,
        id: ScimGroupId,
        if_match: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let ceiling = ceiling(&mut *tx, ctx).await?;
        let group = existing(&mut *tx, id).await?;
        check_if_match(
            if_match,
            &karen_domain::scim::etag(&group.version.to_string()),
        )?;
        let members = tx.scim().group_members(id).await?;
        tx.scim().delete_group(id).await?;
        let now = self.deps.clock.now();
        self.sync_all(&mut *tx, ctx, ceiling, &members, now).await?;
        let mut before = audit_json(&group);
        before["members"] = serde_json::json!(members);
        let audit = Record::new("scim.group.delete")
            .target("group", id)
            .before(&before);
        self.commit_change(tx, ctx, audit).await?;
        Ok(())
    }
}
