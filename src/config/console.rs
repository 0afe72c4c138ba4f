//! `[console]`: the guard's console, a web page the daemon serves on the booth's LAN
//! (`src/daemon/console/`). Off unless `listen` is given.
use super::problems::Problems;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Where the console is served; absent: no console.
    pub listen: Option<SocketAddr>,
    /// The guards' and supervisors' logins (`gatehouse console-user`).
    #[serde(default = "default_users")]
    pub users: PathBuf,
    /// The console's certificate and key (PEM). The .deb makes a self-signed pair at install
    /// (`gatehouse console-cert`); without them the console speaks plain HTTP, which production
    /// allows on loopback only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The booth's own screens (its PC, its tablet): each has connections of its own that no
    /// other host on the LAN can take.
    #[serde(default)]
    pub booth: Vec<std::net::IpAddr>,
    /// Visitor passes registered at the gate are kept this long after they end, then deleted
    /// with the host, purpose and plate they carry.
    #[serde(default = "default_visitor_retention")]
    pub visitor_retention_days: u32,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        ConsoleSection {
            listen: None,
            users: default_users(),
            tls_cert: None,
            tls_key: None,
            booth: Vec::new(),
            visitor_retention_days: default_visitor_retention(),
        }
    }
}

fn default_users() -> PathBuf {
    PathBuf::from("/etc/gatehouse/console-users")
}

fn default_visitor_retention() -> u32 {
    30
}

impl ConsoleSection {
    pub fn tls(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.tls_cert.as_ref().zip(self.tls_key.as_ref())
    }

    pub(super) fn problems(&self, path: &str, production: bool, out: &mut Problems) {
        let Some(at) = self.listen else { return };
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            out.add(
                format!("{path}.tls_cert"),
                "give tls_cert and tls_key together",
            );
        }
        if self.tls().is_none() && !at.ip().is_loopback() {
            let message = format!(
                "{at} is reachable from the LAN without TLS: anyone on it reads the guards' \
                 passwords and sessions; give tls_cert and tls_key (the .deb makes a pair: \
                 /etc/gatehouse/console.crt, console.key)"
            );
            if production {
                out.add(format!("{path}.listen"), message);
            } else {
                out.warn(format!("{path}.listen"), message);
            }
        }
        if self.visitor_retention_days == 0 || self.visitor_retention_days > 366 {
            out.add(
                format!("{path}.visitor_retention_days"),
                "must be 1 to 366: visitor data is kept no longer than it is needed",
            );
        }
    }
}
