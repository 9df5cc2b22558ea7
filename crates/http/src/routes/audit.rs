//! The tenant's tamper-evident audit trail: filtered pages, streamed exports
//! (JSON Lines, CSV), signed checkpoints and the key that verifies them.
//! Reading the trail is itself recorded in it.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use karen_domain::audit::{AuditEvent, AuditFilter, Checkpoint, Outcome, hex, parse_action};
use karen_domain::page::{DEFAULT_LIMIT, MAX_LIMIT};
use karen_domain::{Error, TenantContext};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Authorized, Operator, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit))
        .routes(routes!(export_audit))
        .routes(routes!(list_checkpoints, create_checkpoint))
        .routes(routes!(checkpoint_key))
        .routes(routes!(list_platform_audit))
}

/// Filters; all optional.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// RFC 3339; events at or after.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    from: Option<OffsetDateTime>,
    /// RFC 3339; events before.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    until: Option<OffsetDateTime>,
    /// `user`, `api_key`, `operator` or `system`.
    actor_kind: Option<String>,
    /// A user, API key or operator key id, or a system job's name.
    actor_id: Option<String>,
    /// A dotted action name such as `user.create`.
    action: Option<String>,
    target_type: Option<String>,
    target_id: Option<String>,
    /// `success`, `failure` or `denied`.
    outcome: Option<String>,
    /// The `next_cursor` of the previous page.
    after: Option<String>,
    /// 1–200 (default 50).
    limit: Option<u32>,
    /// Exports only: `jsonl` (default) or `csv`.
    format: Option<String>,
}

fn short_text(value: Option<String>, field: &str) -> Result<Option<String>, Error> {
    match value {
        Some(text) if text.is_empty() || text.len() > 200 => Err(Error::invalid(
            Some(field),
            format!("{field} must be 1 to 200 characters"),
        )),
        other => Ok(other),
    }
}

impl AuditParams {
    fn filter(&mut self) -> Result<AuditFilter, Error> {
        if let (Some(from), Some(until)) = (self.from, self.until)
            && from > until
        {
            return Err(Error::invalid(Some("from"), "from must not be after until"));
        }
        Ok(AuditFilter {
            from: self.from,
            until: self.until,
            actor_kind: self
                .actor_kind
                .as_deref()
                .map(karen_domain::audit::parse_actor_kind)
                .transpose()?,
            actor_id: short_text(self.actor_id.take(), "actor_id")?,
            action: self.action.as_deref().map(parse_action).transpose()?,
            target_type: short_text(self.target_type.take(), "target_type")?,
            target_id: short_text(self.target_id.take(), "target_id")?,
            outcome: self.outcome.as_deref().map(Outcome::parse).transpose()?,
        })
    }

    fn after(&self) -> Result<i64, Error> {
        match self.after.as_deref() {
            None | Some("") => Ok(0),
            Some(text) => text.parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
                Error::invalid(
                    Some("after"),
                    "after must be the next_cursor of a previous page",
                )
            }),
        }
    }

    fn limit(&self) -> Result<u32, Error> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::invalid(
                Some("limit"),
                format!("limit must be between 1 and {MAX_LIMIT} (got {limit})"),
            ));
        }
        Ok(limit)
    }
}

/// Who acted.
#[derive(Serialize, ToSchema)]
pub(crate) struct ActorView {
    /// `user`, `api_key`, `operator` or `system`.
    kind: &'static str,
    id: String,
    /// The owner of an API key.
    user_id: Option<String>,
}

/// One audit event and its place in the tenant's hash chain.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEventView {
    seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    actor: ActorView,
    action: String,
    target_type: Option<String>,
    target_id: Option<String>,
    /// `success`, `failure` or `denied`.
    outcome: &'static str,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    /// `{"before": …, "after": …}` with secrets redacted (verbatim text in `diff_text`).
    #[schema(value_type = Option<Object>)]
    diff: Option<serde_json::Value>,
    /// The exact text the hash covers.
    diff_text: Option<String>,
    /// Hex SHA-256 of the previous event (zeros for the first).
    prev_hash: String,
    /// Hex SHA-256 over the canonical encoding.
    hash: String,
}

impl From<AuditEvent> for AuditEventView {
    fn from(event: AuditEvent) -> Self {
        let e = event.entry;
        Self {
            seq: event.seq,
            at: e.at,
            actor: ActorView {
                kind: e.actor.kind,
                id: e.actor.id,
                user_id: e.actor.user_id,
            },
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            outcome: e.outcome.as_str(),
            ip: e.ip,
            user_agent: e.user_agent,
            request_id: e.request_id,
            diff: e.diff.as_deref().and_then(|d| serde_json::from_str(d).ok()),
            diff_text: e.diff,
            prev_hash: hex(&event.prev_hash),
            hash: hex(&event.hash),
        }
    }
}

/// An event in the JSON form of `GET /v1/audit/export?format=jsonl` (also
/// what external audit collectors receive).
pub fn audit_event_json(event: &AuditEvent) -> serde_json::Value {
    serde_json::to_value(AuditEventView::from(event.clone())).unwrap_or_default()
}

/// One page of events, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditPageView {
    items: Vec<AuditEventView>,
    /// Pass as `after` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Your tenant's audit trail, oldest first, filtered (this read is recorded as `audit.read`).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditParams), security(("bearer" = ["audit:read"])),
    responses((status = 200, body = AuditPageView)))]
async fn list_audit(
    State(state): State<AppState>,
    auth: Authorized<perm::AuditRead>,
    ApiQuery(mut params): ApiQuery<AuditParams>,
) -> ApiResult<Json<AuditPageView>> {
    if params.format.is_some() {
        return Err(
            Error::invalid(Some("format"), "format applies to /v1/audit/export only").into(),
        );
    }
    let filter = params.filter()?;
    let page = state
        .services
        .audit
        .list(&auth.ctx, &filter, params.after()?, params.limit()?)
        .await?;
    Ok(Json(AuditPageView {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor.map(|s| s.to_string()),
    }))
}

/// The platform chain (operator actions outside any tenant: tenant
/// lifecycle, operator keys, platform settings, refused operator keys),
/// oldest first, filtered. Operator keys only; this read is recorded there
/// as `platform.audit.read`.
#[utoipa::path(get, path = "/v1/platform/audit", tag = "platform", params(AuditParams), security(("operator" = [])),
    responses((status = 200, body = AuditPageView)))]
async fn list_platform_audit(
    State(state): State<AppState>,
    Operator(operator): Operator,
    ApiQuery(mut params): ApiQuery<AuditParams>,
) -> ApiResult<Json<AuditPageView>> {
    if params.format.is_some() {
        return Err(
            Error::invalid(Some("format"), "format applies to /v1/audit/export only").into(),
        );
    }
    let filter = params.filter()?;
    let page = state
        .services
        .audit
        .list_platform(&operator, &filter, params.after()?, params.limit()?)
        .await?;
    Ok(Json(AuditPageView {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor.map(|s| s.to_string()),
    }))
}

const EXPORT_BATCH: i64 = 1000;
const CSV_HEADER: &str = "seq,at,actor_kind,actor_id,actor_user_id,action,target_type,target_id,outcome,ip,user_agent,request_id,diff,prev_hash,hash\n";

fn csv_line(out: &mut String, event: &AuditEvent) {
    let e = &event.entry;
    let at =
        e.at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
    let fields: [&str; 15] = [
        &event.seq.to_string(),
        &at,
        e.actor.kind,
        &e.actor.id,
        e.actor.user_id.as_deref().unwrap_or(""),
        &e.action,
        e.target_type.as_deref().unwrap_or(""),
        e.target_id.as_deref().unwrap_or(""),
        e.outcome.as_str(),
        e.ip.as_deref().unwrap_or(""),
        e.user_agent.as_deref().unwrap_or(""),
        e.request_id.as_deref().unwrap_or(""),
        e.diff.as_deref().unwrap_or(""),
        &hex(&event.prev_hash),
        &hex(&event.hash),
    ];
    karen_app::csv::line(out, &fields);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Jsonl,
    Csv,
}

struct Export {
    state: AppState,
    ctx: TenantContext,
    filter: AuditFilter,
    format: ExportFormat,
    after: i64,
    header_sent: bool,
    done: bool,
}

async fn next_chunk(mut export: Export) -> Option<(Result<String, std::io::Error>, Export)> {
    if export.done {
        return None;
    }
    let mut out = String::new();
    if !export.header_sent {
        export.header_sent = true;
        if export.format == ExportFormat::Csv {
            out.push_str(CSV_HEADER);
        }
    }
    let batch = export
        .state
        .services
        .audit
        .export_batch(&export.ctx, &export.filter, export.after, EXPORT_BATCH)
        .await;
    let batch = match batch {
        Ok(batch) => batch,
        Err(error) => {
            tracing::warn!(%error, "audit export failed mid-stream");
            export.done = true;
            return Some((Err(std::io::Error::other("audit export failed")), export));
        }
    };
    if (batch.len() as i64) < EXPORT_BATCH {
        export.done = true;
    }
    if let Some(last) = batch.last() {
        export.after = last.seq;
    }
    for event in batch {
        match export.format {
            ExportFormat::Csv => csv_line(&mut out, &event),
            ExportFormat::Jsonl => {
                let view = AuditEventView::from(event);
                if let Ok(line) = serde_json::to_string(&view) {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
    }
    Some((Ok(out), export))
}

/// Your tenant's audit trail as JSON Lines or CSV, streamed oldest first
/// (same filters as `GET /v1/audit`; recorded as `audit.export`).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(AuditParams), security(("bearer" = ["audit:read"])),
    responses((status = 200, description = "application/x-ndjson (jsonl) or text/csv (csv), streamed")))]
async fn export_audit(
    State(state): State<AppState>,
    auth: Authorized<perm::AuditRead>,
    ApiQuery(mut params): ApiQuery<AuditParams>,
) -> ApiResult<Response> {
    let format = match params.format.as_deref() {
        None | Some("jsonl") => ExportFormat::Jsonl,
        Some("csv") => ExportFormat::Csv,
        Some(_) => {
            return Err(Error::invalid(Some("format"), "format must be jsonl or csv").into());
        }
    };
    if params.after.is_some() || params.limit.is_some() {
        return Err(Error::invalid(
            Some("after"),
            "an export streams every matching event; after and limit apply to /v1/audit",
        )
        .into());
    }
    let filter = params.filter()?;
    let label = if format == ExportFormat::Csv {
        "csv"
    } else {
        "jsonl"
    };
    state.services.audit.begin_export(&auth.ctx, label).await?;
    let export = Export {
        state,
        ctx: auth.ctx,
        filter,
        format,
        after: 0,
        header_sent: false,
        done: false,
    };
    let body = Body::from_stream(futures::stream::unfold(export, next_chunk));
    let (content_type, file) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "audit.csv"),
        ExportFormat::Jsonl => ("application/x-ndjson", "audit.jsonl"),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A signed checkpoint: the chain had `hash` at `seq`.
#[derive(Serialize, ToSchema)]
pub(crate) struct CheckpointView {
    seq: i64,
    /// Hex SHA-256 of event `seq`.
    hash: String,
    #[serde(with = "time::serde::rfc3339")]
    signed_at: OffsetDateTime,
    key_id: String,
    /// Base64 Ed25519 signature over the checkpoint message (see the README).
    signature: String,
}

impl From<Checkpoint> for CheckpointView {
    fn from(c: Checkpoint) -> Self {
        Self {
            seq: c.seq,
            hash: hex(&c.hash),
            signed_at: c.signed_at,
            key_id: c.key_id,
            signature: base64::engine::general_purpose::STANDARD.encode(&c.signature),
        }
    }
}

/// Paging of checkpoints.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckpointParams {
    /// The `next_cursor` of the previous page.
    after: Option<String>,
    /// 1–200 (default 50).
    limit: Option<u32>,
}

/// One page of checkpoints, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct CheckpointPageView {
    items: Vec<CheckpointView>,
    next_cursor: Option<String>,
}

/// Your tenant's signed checkpoints, oldest first (keep them: they prove later that the trail was not rewritten).
#[utoipa::path(get, path = "/v1/audit/checkpoints", tag = "audit", params(CheckpointParams), security(("bearer" = ["audit:read"])),
    responses((status = 200, body = CheckpointPageView)))]
async fn list_checkpoints(
    State(state): State<AppState>,
    auth: Authorized<perm::AuditRead>,
    ApiQuery(params): ApiQuery<CheckpointParams>,
) -> ApiResult<Json<CheckpointPageView>> {
    let paging = AuditParams {
        after: params.after,
        limit: params.limit,
        ..AuditParams::default()
    };
    let limit = paging.limit()?;
    let mut items = state
        .services
        .audit
        .checkpoints(&auth.ctx, paging.after()?, limit + 1)
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|c| c.seq.to_string())
    } else {
        None
    };
    Ok(Json(CheckpointPageView {
        items: items.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// The outcome of a checkpoint request.
#[derive(Serialize, ToSchema)]
pub(crate) struct CheckpointCreated {
    /// `null` when the newest checkpoint already covers the newest event.
    checkpoint: Option<CheckpointView>,
}

/// Signs a checkpoint of your tenant's newest audit event now.
#[utoipa::path(post, path = "/v1/audit/checkpoints", tag = "audit", security(("bearer" = ["audit:read"])),
    responses((status = 200, body = CheckpointCreated)))]
async fn create_checkpoint(
    State(state): State<AppState>,
    auth: Authorized<perm::AuditRead>,
) -> ApiResult<Json<CheckpointCreated>> {
    if state.services.audit.public_key().is_none() {
        return Err(Error::FeatureDisabled("audit_checkpoints").into());
    }
    let checkpoint = state.services.audit.checkpoint_for(&auth.ctx).await?;
    Ok(Json(CheckpointCreated {
        checkpoint: checkpoint.map(Into::into),
    }))
}

/// The key that verifies checkpoints.
#[derive(Serialize, ToSchema)]
pub(crate) struct CheckpointKeyView {
    /// Always `Ed25519`.
    algorithm: &'static str,
    key_id: String,
    /// The raw 32-byte public key, base64.
    public_key: String,
    /// The same, hex.
    public_key_hex: String,
}

/// The Ed25519 public key that signs checkpoints.
#[utoipa::path(get, path = "/v1/audit/checkpoints/key", tag = "audit", security(("bearer" = ["audit:read"])),
    responses((status = 200, body = CheckpointKeyView)))]
async fn checkpoint_key(
    State(state): State<AppState>,
    _auth: Authorized<perm::AuditRead>,
) -> ApiResult<Json<CheckpointKeyView>> {
    let (key_id, public_key) = state
        .services
        .audit
        .public_key()
        .ok_or(Error::FeatureDisabled("audit_checkpoints"))?;
    Ok(Json(CheckpointKeyView {
        algorithm: "Ed25519",
        key_id,
        public_key: base64::engine::general_purpose::STANDARD.encode(&public_key),
        public_key_hex: hex(&public_key),
    }))
}
