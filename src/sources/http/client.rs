//! A small HTTP/1.1 client for a device's own API (Hikvision ISAPI): one connection per request,
//! a deadline on connecting and on the answer's head, and the authentication the device asks
//! for in its 401 — Digest (RFC 7616 / 2617, computed by the `digest_auth` crate) or Basic.
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use std::time::Duration;

/// Answers read whole (not a stream) are cut off here.
const MAX_ANSWER: usize = 1024 * 1024;

/// Where a device's API is and how gatehouse logs in to it.
#[derive(Clone)]
pub struct DeviceApi {
    /// `host:port`.
    pub host: String,
    pub username: String,
    pub password: String,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("no answer in time")]
    Timeout,
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the device refused the credentials (401)")]
    Unauthorized,
    #[error("the device answered {0}")]
    Status(StatusCode),
}

impl DeviceApi {
    /// Sends one request, authenticating as the device asks; the answer's body is left to read.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Response<Incoming>, ApiError> {
        let first = self.send(&method, path, body.clone(), None).await?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        drop(first);
        let authorization = if challenge.trim_start().starts_with("Digest") {
            let mut prompt =
                digest_auth::parse(&challenge).map_err(|e| ApiError::Http(e.to_string()))?;
            let context = digest_auth::AuthContext::new_with_method(
                self.username.as_str(),
                self.password.as_str(),
                path,
                body.as_ref().map(|(_, b)| b.as_slice()),
                digest_auth::HttpMethod::from(method.as_str()),
            );
            prompt
                .respond(&context)
                .map_err(|e| ApiError::Http(e.to_string()))?
                .to_header_string()
        } else {
            use base64::Engine;
            let pair = format!("{}:{}", self.username, self.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        let again = self.send(&method, path, body, Some(authorization)).await?;
        if again.status() == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized);
        }
        Ok(again)
    }

    /// One request whose answer is read whole (up to 1 MiB); a non-2xx status is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Bytes, ApiError> {
        let answer = self.request(method, path, body).await?;
        let status = answer.status();
        let bytes = tokio::time::timeout(
            self.timeout,
            Limited::new(answer.into_body(), MAX_ANSWER).collect(),
        )
        .await
        .map_err(|_| ApiError::Timeout)?
        .map_err(|e| ApiError::Http(e.to_string()))?
        .to_bytes();
        if !status.is_success() {
            return Err(ApiError::Status(status));
        }
        Ok(bytes)
    }

    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
        authorization: Option<String>,
    ) -> Result<Response<Incoming>, ApiError> {
        let connect = tokio::net::TcpStream::connect(&self.host);
        let stream = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| ApiError::Timeout)?
            .map_err(|e| ApiError::Connect(self.host.clone(), e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| ApiError::Http(e.to_string()))?;
        // The connection lives as long as the answer's body is read.
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, &self.host);
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a);
        }
        let body = match body {
            Some((kind, bytes)) => {
                req = req.header(CONTENT_TYPE, kind);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| ApiError::Http(e.to_string()))?;
        tokio::time::timeout(self.timeout, sender.send_request(req))
            .await
            .map_err(|_| ApiError::Timeout)?
            .map_err(|e| ApiError::Http(e.to_string()))
    }
}
