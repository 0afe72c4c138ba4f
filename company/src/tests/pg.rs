//! A real PostgreSQL for a test: `initdb` in a temporary directory, `pg_ctl` on a free port, as
//! the `postgres` user when run as root (PostgreSQL refuses root). Stopped and removed when
//! dropped; `stop`/`start` take it away and bring it back mid-test.
use super::{free_port, skip};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pg {
    pub url: String,
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Debian's newest server binaries, else whatever is on the PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn as_owner(bin: &Path, tool: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

impl Pg {
    pub fn start() -> Option<Pg> {
        let Some(bin) = bin_dir() else {
            skip("PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // The server runs as `postgres` when we are root: it must reach the directory.
        let _ = Command::new("chmod").arg("777").arg(dir.path()).status();
        let out = as_owner(&bin, "initdb")
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb: {out:?}");
        let port = free_port();
        let pg = Pg {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            data,
            port,
            _dir: dir,
        };
        pg.start_again();
        Some(pg)
    }

    /// Starts the server (again) on the same port and data.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.data.parent().unwrap().display()
        );
        let out = as_owner(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &opts, "-w", "-l"])
            .arg(self.data.parent().unwrap().join("log"))
            .arg("start")
            .output()
            .expect("pg_ctl runs");
        assert!(out.status.success(), "pg_ctl start: {out:?}");
    }

    /// Stops the server at once (`-m immediate`: as a crash would).
    pub fn stop(&self) {
        let _ = as_owner(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// A tool of this installation (`pg_dump`, `pg_restore`, `psql`), run as the server's owner.
    pub fn tool(&self, tool: &str) -> Command {
        as_owner(&self.bin, tool)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A directory the server's owner can write to (for dumps).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}
