//! A read HTTP response with assertion helpers.

use reqwest::header::HeaderMap;
use serde_json::Value;
use uuid::Uuid;

/// A response: status, headers and body (parsed as JSON when it is JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub(crate) async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            body,
        }
    }

    /// Reads a response the test sent itself (with headers of its own).
    pub async fn read_response(response: reqwest::Response) -> Self {
        Self::read(response).await
    }

    /// Fails the test unless the status is `status`.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// Fails the test unless this is a problem document with `status` and `code`.
    #[track_caller]
    pub fn expect_problem(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        let content_type = self.header("content-type").unwrap_or_default();
        assert_eq!(
            content_type, "application/problem+json",
            "problem content type; body: {}",
            self.text
        );
        assert_eq!(self.body["code"], code, "problem code; body: {}", self.text);
        assert_eq!(
            self.body["status"], status,
            "problem status field; body: {}",
            self.text
        );
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "problem detail; body: {}",
            self.text
        );
        self
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A string at a top-level key.
    #[track_caller]
    pub fn str(&self, key: &str) -> &str {
        self.body[key]
            .as_str()
            .unwrap_or_else(|| panic!("no string '{key}' in {}", self.text))
    }

    /// A UUID at a JSON pointer (e.g. `/user/id`).
    #[track_caller]
    pub fn uuid(&self, pointer: &str) -> Uuid {
        let text = self
            .body
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no '{pointer}' in {}", self.text));
        Uuid::parse_str(text).unwrap()
    }

    /// The `id`s of the `items` of a page.
    #[track_caller]
    pub fn item_ids(&self) -> Vec<String> {
        self.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items in {}", self.text))
            .iter()
            .map(|item| item["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}
