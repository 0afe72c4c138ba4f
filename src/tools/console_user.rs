//! `gatehouse console-user`: the guards' and supervisors' logins for the console, in the file
//! `[console] users` names. The daemon reads it again when it changes: a disabled user or a new
//! password ends that person's sessions at their next request.
use crate::daemon::console::users::{self, Role, User};
use anyhow::Context;
use clap::Subcommand;
use std::io::BufRead;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ConsoleUser {
    /// A new login; the password is read from stdin with --password-stdin, or made and printed
    /// once.
    Add {
        name: String,
        /// guard (sees, registers visitors, opens with a reason, acknowledges) or supervisor
        /// (also changes the mode).
        #[arg(long)]
        role: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// A new password (stdin with --password-stdin, or made and printed); ends the sessions.
    Reset {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// No more logins; the person's sessions end.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    List,
}

/// The users file the config names.
pub fn file(config: &Path) -> anyhow::Result<PathBuf> {
    let c = crate::config::Config::load(config)?;
    Ok(c.console.users)
}

pub fn run(cmd: ConsoleUser, path: &Path) -> anyhow::Result<()> {
    let mut all = users::load(path)?;
    let find = |all: &mut Vec<User>, name: &str| -> anyhow::Result<usize> {
        all.iter()
            .position(|u| u.name == name)
            .with_context(|| format!("no user {name:?} in {}", path.display()))
    };
    match cmd {
        ConsoleUser::List => {
            for u in &all {
                let state = if u.enabled { "enabled" } else { "disabled" };
                println!("{}\t{}\t{state}", u.name, u.role.as_str());
            }
            return Ok(());
        }
        ConsoleUser::Add {
            name,
            role,
            password_stdin,
        } => {
            anyhow::ensure!(
                users::name_ok(&name),
                "a name is 1-32 letters, digits, '.', '_' or '-'"
            );
            anyhow::ensure!(
                all.iter().all(|u| u.name != name),
                "user {name:?} exists (reset, enable or disable it)"
            );
            let role = Role::parse(&role).context("--role guard or supervisor")?;
            let (password, made) = password(password_stdin)?;
            all.push(User {
                name: name.clone(),
                role,
                enabled: true,
                hash: users::hash_password(&password)?,
            });
            users::save(path, &all)?;
            println!("user {name} ({}) added", role.as_str());
            if made {
                println!("password: {password}");
            }
        }
        ConsoleUser::Reset {
            name,
            password_stdin,
        } => {
            let i = find(&mut all, &name)?;
            let (password, made) = password(password_stdin)?;
            all[i].hash = users::hash_password(&password)?;
            users::save(path, &all)?;
            println!("user {name}: new password set; their sessions end");
            if made {
                println!("password: {password}");
            }
        }
        ConsoleUser::Disable { name } => {
            let i = find(&mut all, &name)?;
            all[i].enabled = false;
            users::save(path, &all)?;
            println!("user {name} disabled; their sessions end");
        }
        ConsoleUser::Enable { name } => {
            let i = find(&mut all, &name)?;
            all[i].enabled = true;
            users::save(path, &all)?;
            println!("user {name} enabled");
        }
    }
    Ok(())
}

fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((users::new_password(), true));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(
        p.chars().count() >= 10,
        "a password of at least 10 characters"
    );
    Ok((p, false))
}
