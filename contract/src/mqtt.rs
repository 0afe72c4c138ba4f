//! MQTT client settings both sides use to reach a broker (`mqtt://`, `mqtts://` with a CA and a
//! client certificate): the gateway's uplink and device side, the company's tools, the simulators.
use rumqttc::{MqttOptions, NetworkOptions, TlsConfiguration, Transport};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    Ca { path: String, message: String },
    #[error("no trusted CA: give uplink.ca_file (the system has no usable root certificates)")]
    NoRoots,
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Options for a client of `url`, with the house defaults: MQTT 3.1.1, keep-alive, and large
/// enough packets for a batch.
pub fn options(url: &BrokerUrl, client_id: &str, keep_alive: Duration) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, url.host.clone(), url.port);
    o.set_keep_alive(keep_alive);
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// TCP_NODELAY on every socket: Nagle plus delayed ACK costs 40 ms a message.
pub fn network_options() -> NetworkOptions {
    let mut n = NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n.set_connection_timeout(5);
    n
}

/// rustls (ring) trusting the CAs in `ca_file`, or the system's roots without one; with
/// `client` (certificate chain, private key; PEM) it authenticates itself too (mutual TLS).
pub fn tls_transport(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Transport, TlsError> {
    let roots = match ca_file {
        Some(path) => roots_from(path)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (chain, key) = cert_and_key(cert, key)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(config),
    )))
}

/// The device endpoint's TLS: our certificate and key (PEM); with `client_ca`, every device must
/// present a certificate that CA signed (mutual TLS).
pub fn tls_acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<rumqttc::tokio_rustls::TlsAcceptor, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots_from(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Ca {
                path: ca.display().to_string(),
                message: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = cert_and_key(cert, key)?;
    let config = builder.with_single_cert(chain, key)?;
    Ok(rumqttc::tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates in a PEM file.
fn roots_from(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let ca_err = |message: String| TlsError::Ca {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| ca_err(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ca_err(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ca_err("no PEM certificate in the file".into()));
    }
    Ok(roots)
}

type CertAndKey = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// A certificate chain and its private key (PEM files).
fn cert_and_key(cert: &Path, key: &Path) -> Result<CertAndKey, TlsError> {
    let err = |path: &Path, message: String| TlsError::Ca {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(cert).map_err(|e| err(cert, e.to_string()))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(err(cert, "no PEM certificate in the file".into()));
    }
    let pem = std::fs::read(key).map_err(|e| err(key, e.to_string()))?;
    let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| err(key, e.to_string()))?
        .ok_or_else(|| err(key, "no PEM private key in the file".into()))?;
    Ok((chain, key_der))
}

/// How a device (or a simulator playing one) reaches gatehouse's device side: where, and as
/// whom (the device id as username, with its password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLink {
    pub url: BrokerUrl,
    pub login: Option<(String, String)>,
}

impl DeviceLink {
    /// As device `id` with `password`.
    pub fn new(url: BrokerUrl, id: &str, password: &str) -> DeviceLink {
        DeviceLink {
            url,
            login: Some((id.to_string(), password.to_string())),
        }
    }

    /// Anonymous: for an external broker that lets anyone in.
    pub fn anonymous(url: BrokerUrl) -> DeviceLink {
        DeviceLink { url, login: None }
    }

    /// [`options`] with this link's login. A device with a login keeps a persistent session, as
    /// a device should: what gatehouse has not acknowledged it sends again after a reconnect.
    pub fn options(&self, client_id: &str, keep_alive: Duration) -> MqttOptions {
        let mut o = options(&self.url, client_id, keep_alive);
        if let Some((u, p)) = &self.login {
            o.set_credentials(u, p);
            o.set_clean_session(false);
        }
        o
    }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`, the only URL shapes the config takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?} is not a URL (expected mqtt://host:port)"))?;
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(format!("unknown scheme {other:?} (expected mqtt or mqtts)")),
        };
        let hostport = rest.trim_end_matches('/');
        if hostport.contains('@') || hostport.contains('/') {
            return Err(format!(
                "{s:?}: give only scheme://host:port (credentials go in username/password)"
            ));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad port {p:?} in {s:?}"))?,
            ),
            None => (hostport, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("no host in {s:?}"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

/// TLS settings of a client: the CA to trust (the system's roots without one) and, for mutual
/// TLS, a certificate chain and its key (PEM).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_file: Option<std::path::PathBuf>,
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// [`options`], with TLS set up when the URL says `mqtts://`: TLS where it says TLS, or an
/// error — never plain text.
pub fn client_options(
    url: &BrokerUrl,
    client_id: &str,
    keep_alive: Duration,
    tls: &TlsFiles,
) -> Result<MqttOptions, TlsError> {
    let mut o = options(url, client_id, keep_alive);
    if url.tls {
        let client = tls
            .client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        o.set_transport(tls_transport(tls.ca_file.as_deref(), client)?);
    }
    Ok(o)
}
