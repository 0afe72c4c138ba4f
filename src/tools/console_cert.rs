//! `gatehouse console-cert`: a self-signed certificate and key for the guard's console, made at
//! install by the .deb (never over existing files: an operator's own certificate stays). The
//! names it is good for: the box's host name, `localhost`, 127.0.0.1, and each `--name` (a DNS
//! name or an address the booth reaches the box at). The guard's browser is told to trust it
//! once; a company with its own CA replaces both files.
use anyhow::Context;
use std::path::Path;

pub fn make(dir: &Path, names: &[String], force: bool) -> anyhow::Result<()> {
    let (cert_path, key_path) = (dir.join("console.crt"), dir.join("console.key"));
    if !force && (cert_path.exists() || key_path.exists()) {
        println!(
            "{} exists: kept (--force makes a new pair)",
            cert_path.display()
        );
        return Ok(());
    }
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Some(h) = host_name() {
        sans.insert(0, h);
    }
    sans.extend(names.iter().cloned());
    sans.dedup();
    let key = rcgen::KeyPair::generate().context("a key pair")?;
    let mut params = rcgen::CertificateParams::new(sans.clone()).context("the names")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("gatehouse console {}", sans[0]),
    );
    // Ten years: a box at a gate is not re-certified by hand every year.
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.self_signed(&key).context("signing")?;
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&key_path)
        .and_then(|mut f| f.write_all(key.serialize_pem().as_bytes()))
        .with_context(|| key_path.display().to_string())?;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640))?;
    std::fs::write(&cert_path, cert.pem()).with_context(|| cert_path.display().to_string())?;
    println!(
        "{} and {} made for {}",
        cert_path.display(),
        key_path.display(),
        sans.join(", ")
    );
    Ok(())
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}
