//! A small HTTP/1.1 client for a device's own API (Hikvision ISAPI, Dahua CGI): one connection
//! per request, a deadline on connecting and on the answer's head, and Digest authentication
//! (RFC 7616 / 2617, computed by the `digest_auth` crate) when the device asks in its 401. Basic
//! — the password in clear to whoever answers at the device's address — only where the device's
//! config says `auth = "basic"`. Over `https://` only the device's own certificate is taken, by
//! its SHA-256 (terminals' certificates are their own, signed by no CA).
use crate::config::ApiAuth;
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
    pub auth: ApiAuth,
    /// TLS, taking only the pinned certificate.
    pub tls: Option<rumqttc::tokio_rustls::TlsConnector>,
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
    #[error("the device asked for Basic authentication only: the password is not sent in clear to whoever answers at its address unless its api.auth = \"basic\"")]
    BasicRefused,
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
        // A device may offer several schemes, one header each: Digest wherever it is offered.
        let challenges: Vec<String> = first
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.trim_start().to_string())
            .collect();
        drop(first);
        // One header may carry several challenges (`Basic realm=…, Digest realm=…`).
        let digest = challenges.iter().find_map(|c| {
            let at = c.to_ascii_lowercase().find("digest ")?;
            Some(format!("Digest {}", &c[at + 7..]))
        });
        let authorization = if let Some(challenge) = &digest {
            let mut prompt =
                digest_auth::parse(challenge).map_err(|e| ApiError::Http(e.to_string()))?;
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
        } else if self.auth != ApiAuth::Basic {
            return Err(ApiError::BasicRefused);
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
        let mut sender = match &self.tls {
            None => handshake(stream).await?,
            Some(tls) => {
                let name = self.host.rsplit_once(':').map_or(&*self.host, |(h, _)| h);
                let name = rustls::pki_types::ServerName::try_from(
                    name.trim_matches(['[', ']']).to_string(),
                )
                .map_err(|e| ApiError::Http(e.to_string()))?;
                let stream = tokio::time::timeout(self.timeout, tls.connect(name, stream))
                    .await
                    .map_err(|_| ApiError::Timeout)?
                    .map_err(|e| ApiError::Connect(self.host.clone(), format!("TLS: {e}")))?;
                handshake(stream).await?
            }
        };
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

/// HTTP/1.1 over `io`; the connection lives as long as the answer's body is read.
async fn handshake<T>(
    io: T,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ApiError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| ApiError::Http(e.to_string()))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A TLS connector that takes only the certificate whose SHA-256 is `pin`.
pub fn pinned(pin: [u8; 32]) -> Result<rumqttc::tokio_rustls::TlsConnector, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        pin,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    Ok(rumqttc::tokio_rustls::TlsConnector::from(
        std::sync::Arc::new(config),
    ))
}

/// The device's own certificate, by its SHA-256: names and CAs do not matter, the key does (the
/// handshake's signatures are still checked against the pinned certificate).
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        if sha2::Sha256::digest(end_entity.as_ref()).as_slice() == self.pin {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
