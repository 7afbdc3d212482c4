//! What the binary's end-to-end tests share: a small client of ccm's API.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test uses part; tests may panic

use std::time::Duration;

use serde_json::Value;

/// A client of a running ccm's API with one bearer token.
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    token: String,
}

impl Api {
    /// A client of `http://127.0.0.1:{port}` (requests time out after 20 s).
    pub(crate) fn new(port: u16, token: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            token: token.to_owned(),
        }
    }

    /// One request; the status and the body as JSON (a body that is not JSON as a string).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}
