//! Erasure of one user (GDPR article 17): their content is deleted from every
//! store, including the search indexes and the embedding cache; what the
//! tenant must keep (usage for billing, the documents it chooses to keep, the
//! audit trail) stays without naming them.
//!
//! In the audit trail, every event the user caused (as themself or through
//! one of their API keys) loses its actor ids, address and user agent; every
//! event about them loses its target id; and every diff that mentions them
//! (by id or e-mail) is removed. Ids are replaced with one pseudonym per
//! erasure (`erased:…`), so an auditor still sees that one person did these
//! things. The chain still verifies (see `karen_domain::audit::personal`),
//! and the `user.erase` event, recorded in the same transaction, declares
//! exactly which fields were erased so that no one can erase others later by
//! editing the database. Events written before chain version 2 cannot be
//! erased without breaking their hashes; they are counted in the report.

use karen_domain::audit::AuditFilter;
use karen_domain::audit::hex;
use karen_domain::audit::personal::{
    ERASURE_ACTION, ErasureLedger, ErasureMask, PSEUDONYM_PREFIX, erase_fields,
};
use karen_domain::permission::Permission;
use karen_domain::ports::{EntryKey, EntryKind, ErasedRows, MemoryScope, TenantTx};
use karen_domain::retention::Holds;
use karen_domain::{Error, Result, UserId};
use serde::Serialize;

use super::{BATCH, PrivacyService};
use crate::Authority;
use crate::audit::Record;
use crate::memory::delete_document_rows;
use crate::users::{ensure_not_last_owner, permissions_of_user};

/// What to do with the documents the user uploaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UploadedDocuments {
    /// Delete them with the rest (the default: they are the user's data).
    #[default]
    Delete,
    /// Keep them for the tenant, no longer naming their uploader.
    Keep,
}

/// What an erasure removed (counts, never content).
#[derive(Debug, Clone, Serialize)]
pub struct ErasureReport {
    /// The pseudonym that now stands for the user in the audit trail.
    pub pseudonym: String,
    pub conversations: u64,
    pub memories: u64,
    pub documents_deleted: u64,
    pub search_entries: u64,
    #[serde(flatten)]
    pub rows: ErasedRows,
    /// Audit events whose personal fields were erased.
    pub audit_events_erased: u64,
    /// Personal fields erased across those events.
    pub audit_fields_erased: u64,
    /// Events written before chain version 2 that name the user and had to
    /// be kept as they are (erasing them would break the chain).
    pub audit_events_kept_legacy: u64,
    /// Whether the search indexes and the database log were rewritten so
    /// the deleted bytes are gone from their files too.
    pub files_compacted: bool,
}

/// Which personal fields of an event name the person.
struct Subject {
    id: String,
    email: String,
    api_keys: Vec<String>,
}

impl Subject {
    fn mask(&self, entry: &karen_domain::audit::AuditEntry) -> ErasureMask {
        let actor = match entry.actor.kind {
            "user" => entry.actor.id == self.id,
            "api_key" => {
                entry.actor.user_id.as_deref() == Some(self.id.as_str())
                    || self.api_keys.contains(&entry.actor.id)
            }
            _ => false,
        };
        let target = entry.target_id.as_deref() == Some(self.id.as_str());
        let mentions = entry.diff.as_deref().is_some_and(|diff| {
            diff.contains(&self.id) || diff.to_lowercase().contains(&self.email)
        });
        ErasureMask {
            actor,
            target,
            // A system job acting on the person (a failed sign-in, a lockout)
            // records the person's own address.
            network: actor || (target && entry.actor.kind == "system"),
            // An erasure event's diff declares what it erased and names no one.
            diff: entry.action != ERASURE_ACTION && (actor || target || mentions),
        }
    }
}

impl PrivacyService {
    /// Erases `user`: by a member holding `users:manage` and every
    /// permission the user holds (not their own account), or by the
    /// operator's CLI (`Authority::platform`). Another tenant's user is
    /// `not_found`. `confirm_email`, when given, must be the user's address.
    pub async fn erase(
        &self,
        authority: Authority<'_>,
        user: UserId,
        confirm_email: Option<&str>,
        documents: UploadedDocuments,
    ) -> Result<ErasureReport> {
        authority.require(Permission::UsersManage)?;
        if authority.user_id() == Some(user) {
            // The erasure event would name its own subject as its actor.
            return Err(Error::Conflict(
                "you cannot erase your own account; ask another administrator".into(),
            ));
        }
        let scope = authority.scope();
        let tenant = scope.tenant_id();
        let mut tx = self.deps.store.tenant(scope).await?;
        let profile = tx
            .users()
            .user_by_id(user)
            .await?
            .ok_or(Error::NotFound("user"))?;
        let held = permissions_of_user(&mut *tx, &profile).await?;
        authority.ensure_within(held, "erasing this user")?;
        if confirm_email
            .is_some_and(|typed| !typed.trim().eq_ignore_ascii_case(profile.email.as_str()))
        {
            return Err(Error::invalid(
                Some("confirm_email"),
                "confirm_email must be the e-mail address of the user being erased",
            ));
        }
        ensure_not_last_owner(&mut *tx, &profile).await?;
        let holds = Holds::of(&tx.retention().active_holds().await?);
        if holds.covers(Some(user), None) {
            return Err(Error::Conflict(
                "a legal hold covers this user; lift it before erasing them".into(),
            ));
        }
        let pseudonym = format!(
            "{PSEUDONYM_PREFIX}{}",
            &hex(uuid::Uuid::new_v4().as_bytes())[..16]
        );
        let mut report = ErasureReport {
            pseudonym: pseudonym.clone(),
            conversations: 0,
            memories: 0,
            documents_deleted: 0,
            search_entries: 0,
            rows: ErasedRows::default(),
            audit_events_erased: 0,
            audit_fields_erased: 0,
            audit_events_kept_legacy: 0,
            files_compacted: true,
        };
        let mut keys = Vec::new();
        let mut hashes = Vec::new();

        // Conversations (their messages and citations go with them).
        loop {
            let batch = tx
                .conversations()
                .list_conversations(user, None, BATCH)
                .await?;
            if batch.is_empty() {
                break;
            }
            if let Some(held) = batch.iter().find(|c| holds.covers(None, Some(c.id))) {
                return Err(Error::Conflict(format!(
                    "a legal hold covers conversation {}; lift it before erasing this user",
                    held.id
                )));
            }
            for conversation in batch {
                tx.conversations()
                    .delete_conversation(conversation.id)
                    .await?;
                report.conversations += 1;
            }
        }
        loop {
            let batch = tx
                .memories()
                .list_memories(MemoryScope::Private(user), None, BATCH)
                .await?;
            if batch.is_empty() {
                break;
            }
            for memory in batch {
                tx.memories().delete_memory(memory.id).await?;
                keys.push(EntryKey::new(EntryKind::Memory, memory.id.as_uuid()));
                hashes.push(memory.content_hash);
                report.memories += 1;
            }
        }
        if documents == UploadedDocuments::Delete {
            let mut after = None;
            let mut owned = Vec::new();
            loop {
                let batch = tx.documents().list_documents(after, BATCH).await?;
                let done = batch.len() < BATCH as usize;
                after = batch.last().map(|d| d.id);
                owned.extend(batch.into_iter().filter(|d| d.uploaded_by == Some(user)));
                if done {
                    break;
                }
            }
            for document in owned {
                for chunk in tx.documents().chunks_of(document.id).await? {
                    hashes.push(chunk.content_hash);
                }
                keys.extend(delete_document_rows(&mut *tx, document.id).await?);
                report.documents_deleted += 1;
            }
        }

        let subject = Subject {
            id: user.to_string(),
            email: profile.email.as_str().to_lowercase(),
            api_keys: api_key_ids(&mut *tx, user).await?,
        };
        report.rows = tx
            .erasure()
            .erase_user_rows(user, &pseudonym, &hashes)
            .await?;
        let ledger = erase_audit(&mut *tx, &subject, &pseudonym, &mut report).await?;

        report.search_entries = u64::try_from(keys.len()).unwrap_or(u64::MAX);
        self.indexer.remove(tenant, &keys).await?;
        let mut declaration = ledger.declaration(&pseudonym);
        if let Some(object) = declaration.as_object_mut() {
            let mut counts = serde_json::to_value(&report).unwrap_or_default();
            if let Some(counts) = counts.as_object_mut() {
                counts.remove("files_compacted");
            }
            object.insert("erased".into(), counts);
        }
        let record = Record::new(ERASURE_ACTION)
            .target("user", &pseudonym)
            .after(&declaration);
        self.deps.audit(&mut *tx, authority.actor(), record).await?;
        tx.commit().await?;
        // Cached keys and permissions of the erased user go on every replica.
        self.deps.access_changed(tenant).await;
        // The erasure stands once committed; what follows only makes the
        // deleted bytes unrecoverable from files. A failure is reported, and
        // the next compaction or snapshot finishes the job.
        if let Err(error) = self.indexer.compact(tenant).await {
            tracing::error!(tenant_id = %tenant, %error, "erasure: cannot compact the search indexes");
            report.files_compacted = false;
        }
        if let Err(error) = self.deps.store.flush_deleted().await {
            tracing::error!(tenant_id = %tenant, %error, "erasure: cannot flush the database log");
            report.files_compacted = false;
        }
        Ok(report)
    }
}

async fn api_key_ids(tx: &mut dyn TenantTx, user: UserId) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut page = karen_domain::page::PageRequest {
        after: None,
        limit: BATCH as u32,
    };
    loop {
        let batch = tx.api_keys().list_api_keys(Some(user), &page).await?;
        let more = batch.len() > BATCH as usize;
        let taken: Vec<_> = batch.into_iter().take(BATCH as usize).collect();
        page.after = taken.last().map(|k| k.id.as_uuid());
        ids.extend(taken.iter().map(|k| k.id.to_string()));
        if !more {
            return Ok(ids);
        }
    }
}

/// Erases the subject's personal fields from every event of the chain, in
/// sequence order, keeping the ledger the erasure event declares.
async fn erase_audit(
    tx: &mut dyn TenantTx,
    subject: &Subject,
    pseudonym: &str,
    report: &mut ErasureReport,
) -> Result<ErasureLedger> {
    let mut ledger = ErasureLedger::new();
    let filter = AuditFilter::default();
    let mut after = 0;
    loop {
        let batch = tx.audit().list_audit(&filter, after, 1000).await?;
        let Some(last) = batch.last() else {
            return Ok(ledger);
        };
        after = last.seq;
        for event in batch {
            let mask = subject.mask(&event.entry);
            if mask.is_empty() {
                continue;
            }
            let Some((erased, seal, touched)) =
                erase_fields(&event.entry, &event.personal, mask, pseudonym)
            else {
                report.audit_events_kept_legacy += 1;
                continue;
            };
            if touched.is_empty() {
                continue;
            }
            tx.audit().redact_audit(event.seq, &erased, &seal).await?;
            for index in touched {
                ledger.add(event.seq, index);
                report.audit_fields_erased += 1;
            }
            report.audit_events_erased += 1;
        }
    }
}
