//! Completes the generated OpenAPI document: title, bearer security scheme,
//! and the error responses every operation can produce.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{PartialSchema as _, ToSchema as _};

use crate::error::Problem;

const PROBLEM: &str = "application/problem+json";

fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Problem::name())))
                .build(),
        )
        .build()
}

/// The SCIM routes answer errors in SCIM's shape (RFC 7644 §3.12).
fn scim_error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/scim+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ScimError")))
                .build(),
        )
        .build()
}

/// Adds the document's metadata, the security schemes and common errors.
pub(crate) fn finish(mut document: OpenApi) -> OpenApi {
    document.info.title = "Karen API".into();
    document.info.version = env!("CARGO_PKG_VERSION").into();
    document.info.description = Some(
        "Self-hosted, multi-tenant AI-assistant platform. Errors are RFC 9457 problem documents \
         (application/problem+json) with a stable `code`."
            .into(),
    );
    let components = document.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert(Problem::name().into_owned(), Problem::schema());
    components.security_schemes.insert(
        "bearer".into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An access token from /v1/auth/login, or a tenant API key (krn_…)",
                ))
                .build(),
        )
        .into(),
    );
    components.security_schemes.insert(
        "operator".into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A platform operator key (krn_op_…)"))
                .build(),
        )
        .into(),
    );
    for (path, item) in document.paths.paths.iter_mut() {
        let scim = path.starts_with("/scim/");
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_body = operation.request_body.is_some();
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses.entry(status.to_owned()).or_insert_with(|| {
                    if scim {
                        scim_error_response(description).into()
                    } else {
                        problem_response(description).into()
                    }
                });
            };
            add(
                "400",
                "Malformed request (bad JSON, header, path or query parameter)",
            );
            if has_body {
                add("413", "Request body too large");
                add("415", "Body is not application/json");
                if !scim {
                    add("422", "A field has an unacceptable value");
                }
            }
            if secured {
                add("401", "Missing, invalid, expired or revoked credential");
                add(
                    "403",
                    "Permission denied, tenant suspended or user disabled",
                );
            }
            add(
                "500",
                "Internal error (details are in the server log, by request id)",
            );
            add("503", "A store is unavailable or the request timed out");
        }
    }
    document
}
