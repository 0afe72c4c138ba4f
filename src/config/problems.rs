//! What every section's checks share: the problems found so far, and the small checks more than
//! one section makes.
use crate::problem::Problem;
use std::path::Path;

/// The problems found so far, each with its path, and the warnings: what starts, but should
/// not at a real gate.
#[derive(Default)]
pub(super) struct Problems {
    pub(super) found: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.found.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// An id that names a topic level and a file: reported at `{path}.id` unless it is safe
    /// there; whether it is.
    pub(super) fn id_is_safe(&mut self, path: &str, id: &str) -> bool {
        let safe = is_topic_safe(id);
        if !safe {
            let message = format!("{id:?} must be non-empty letters, digits, '-' or '_'");
            self.add(format!("{path}.id"), message);
        }
        safe
    }
}

/// The file's mode if group or others may read or write it (a secret that is not private).
pub(super) fn private_file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Safe inside an MQTT topic level and a file name.
fn is_topic_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
