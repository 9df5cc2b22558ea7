//! `POST /v1/embeddings`, OpenAI's embeddings API: `input` a string or an
//! array of strings, `encoding_format` `float` or `base64` (what the official
//! SDKs ask for by default), `dimensions` for models whose vectors may be
//! shortened. Mistakes in the request answer 400, as OpenAI's API does (the
//! error shape comes from the OpenAI router's layer).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use karen_app::assistant::{EmbeddingAnswer, EmbeddingRequest};
use karen_domain::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authorized, perm};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_embeddings))
}

/// An embeddings request (OpenAI's schema; other fields are accepted and ignored).
#[derive(Deserialize, ToSchema)]
pub(crate) struct EmbeddingsRequest {
    /// A string or an array of strings (at most 2048, each at most 8192
    /// tokens). Token arrays are refused.
    #[schema(value_type = Object)]
    input: Option<Value>,
    /// An embedding model from `GET /v1/models`.
    #[schema(value_type = String)]
    model: Option<Value>,
    /// `float` (default) or `base64` (the vector's little-endian f32 bytes).
    #[schema(value_type = Option<String>)]
    encoding_format: Option<Value>,
    /// Shorter vectors: only for models that support it (`text-embedding-3-*`:
    /// truncated and renormalised); otherwise it must equal the model's length.
    #[schema(value_type = Option<u32>)]
    dimensions: Option<Value>,
    /// Accepted and ignored.
    #[schema(value_type = Option<String>)]
    user: Option<Value>,
}

/// How vectors are written in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    Base64,
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::invalid(Some(field), message)
}

/// The texts of `input`: a string or an array of strings.
fn texts(input: Option<Value>) -> Result<Vec<String>, Error> {
    const TOKENS: &str = "token arrays are not supported (the providers behind Karen use different \
        tokenizers); send the text itself, as a string or an array of strings";
    match input {
        None | Some(Value::Null) => Err(invalid(
            "input",
            "input is required: a string or an array of strings",
        )),
        Some(Value::String(text)) => Ok(vec![text]),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(text) => Ok(text),
                Value::Number(_) | Value::Array(_) => Err(invalid("input", TOKENS)),
                _ => Err(invalid(
                    &format!("input[{index}]"),
                    "each input must be a string",
                )),
            })
            .collect(),
        Some(_) => Err(invalid(
            "input",
            "input must be a string or an array of strings",
        )),
    }
}

impl EmbeddingsRequest {
    fn parse(self) -> Result<(EmbeddingRequest, Encoding), Error> {
        let _ignored = self.user;
        let model = match self.model {
            Some(Value::String(model)) => model,
            None | Some(Value::Null) => return Err(invalid("model", "model is required")),
            Some(_) => return Err(invalid("model", "model must be a string")),
        };
        let encoding = match self.encoding_format {
            None | Some(Value::Null) => Encoding::Float,
            Some(Value::String(format)) if format == "float" => Encoding::Float,
            Some(Value::String(format)) if format == "base64" => Encoding::Base64,
            Some(_) => {
                return Err(invalid(
                    "encoding_format",
                    "encoding_format must be 'float' or 'base64'",
                ));
            }
        };
        let dimensions = match self.dimensions {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) => Some(
                number
                    .as_u64()
                    .filter(|d| *d >= 1)
                    .and_then(|d| u32::try_from(d).ok())
                    .ok_or_else(|| {
                        invalid("dimensions", "dimensions must be a positive integer")
                    })?,
            ),
            Some(_) => {
                return Err(invalid(
                    "dimensions",
                    "dimensions must be a positive integer",
                ));
            }
        };
        let request = EmbeddingRequest {
            model,
            inputs: texts(self.input)?,
            dimensions,
        };
        Ok((request, encoding))
    }
}

/// One vector, as numbers or as base64 of its little-endian f32 bytes.
#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

/// One embedding (OpenAI's `embedding` object).
#[derive(Serialize)]
struct EmbeddingItem {
    /// Always `embedding`.
    object: &'static str,
    /// The position of its input.
    index: usize,
    embedding: Vector,
}

/// Tokens metered for the request (inputs found in the cache cost nothing).
#[derive(Serialize, ToSchema)]
pub(crate) struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// The embeddings, in input order (OpenAI's `list` object).
#[derive(Serialize, ToSchema)]
pub(crate) struct EmbeddingList {
    /// Always `list`.
    object: &'static str,
    /// `{"object": "embedding", "index", "embedding"}` per input.
    #[schema(value_type = Vec<Object>)]
    data: Vec<EmbeddingItem>,
    model: String,
    usage: EmbeddingUsage,
}

fn base64_of(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn list(answer: EmbeddingAnswer, encoding: Encoding) -> EmbeddingList {
    let data = answer
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: match encoding {
                Encoding::Float => Vector::Float(vector),
                Encoding::Base64 => Vector::Base64(base64_of(&vector)),
            },
        })
        .collect();
    EmbeddingList {
        object: "list",
        data,
        model: answer.model,
        usage: EmbeddingUsage {
            prompt_tokens: answer.prompt_tokens,
            total_tokens: answer.prompt_tokens,
        },
    }
}

/// Creates embeddings of the inputs (OpenAI-compatible), through the tenant's
/// own provider of the model, else the platform's embedding model.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingsRequest,
    security(("bearer" = ["embeddings:create"])),
    responses((status = 200, body = EmbeddingList),
        (status = 404, description = "model_not_found: not a model this credential may use"),
        (status = 429, description = "budget_exceeded: a hard budget is used up (nothing was sent upstream)"),
        (status = 502, description = "the embedding provider failed")))]
async fn create_embeddings(
    State(state): State<AppState>,
    auth: Authorized<perm::EmbeddingsCreate>,
    body: Result<ApiJson<EmbeddingsRequest>, ApiError>,
) -> Response {
    let result = async {
        let ApiJson(body) = body?;
        let (request, encoding) = body.parse()?;
        let answer = state
            .services
            .assistant
            .embeddings
            .embed(&auth.ctx, request)
            .await?;
        Ok::<_, ApiError>(list(answer, encoding))
    }
    .await;
    match result {
        Ok(list) => Json(list).into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let encoded = base64_of(&[1.0, -0.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(bytes, [0, 0, 128, 63, 0, 0, 0, 191]);
    }

    #[test]
    fn inputs_are_strings_never_tokens() {
        assert_eq!(texts(Some(json("\"a\""))).unwrap(), ["a"]);
        assert_eq!(texts(Some(json("[\"a\", \"b\"]"))).unwrap(), ["a", "b"]);
        for (input, field) in [
            ("[1, 2]", "input"),
            ("[[1], [2]]", "input"),
            ("[\"a\", {}]", "input[1]"),
            ("42", "input"),
            ("null", "input"),
        ] {
            match texts(Some(json(input))) {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f.as_deref(), Some(field)),
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }
}
