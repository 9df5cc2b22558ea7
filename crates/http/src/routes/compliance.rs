//! Compliance reports over the API: the caller's tenant's report for a
//! framework, as JSON, CSV or HTML (the same as `karen report compliance`).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use karen_app::compliance::{Format, Framework, render};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Authorized, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(compliance_report))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReportParams {
    /// `soc2`, `gdpr` or `hipaa`.
    framework: String,
    /// `json` (default), `csv` or `html`.
    format: Option<String>,
}

/// Your tenant's compliance report: each control of the framework with its
/// status (`pass`, `fail`, `not_evidenced`), the evidence Karen holds, and
/// what Karen cannot evidence (recorded as `compliance.report`).
#[utoipa::path(get, path = "/v1/tenant/compliance-report", tag = "audit", params(ReportParams),
    security(("bearer" = ["audit:read"])),
    responses((status = 200, description = "application/json, text/csv or text/html")))]
async fn compliance_report(
    State(state): State<AppState>,
    auth: Authorized<perm::AuditRead>,
    ApiQuery(params): ApiQuery<ReportParams>,
) -> ApiResult<Response> {
    let framework = Framework::parse(&params.framework)?;
    let format = Format::parse(params.format.as_deref().unwrap_or("json"))?;
    let report = state
        .services
        .compliance
        .report_for(&auth.ctx, framework)
        .await?;
    let text = render(std::slice::from_ref(&report), format)?;
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    let file = match format {
        Format::Json => None,
        Format::Csv => Some("csv"),
        Format::Html => Some("html"),
    };
    if let Some(extension) = file
        && let Ok(value) = HeaderValue::from_str(&format!(
            "attachment; filename=\"compliance-{}-{}.{extension}\"",
            framework.as_str(),
            report.tenant_slug
        ))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
