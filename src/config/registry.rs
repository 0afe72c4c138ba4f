//! `[registry]`: the list files imported at start, and how large the lists may grow.
use super::problems::Problems;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// Residents to import at start (`.csv` or `.jsonl`); re-imported only when the file changes.
    pub import: Option<PathBuf>,
    /// A list with more residents than this is refused (and the stored one kept): it is a list
    /// meant for somewhere bigger than one estate, and would take the box's memory.
    #[serde(default = "default_max_residents")]
    pub max_residents: usize,
    /// Visitor passes to import at start (`.csv`: pass_id, host_household, credentials, plates,
    /// valid_from, valid_until, uses).
    pub passes: Option<PathBuf>,
    /// Vehicle plates to import at start (`.csv`: plate, kind, household, valid_until,
    /// lockdown_allowed).
    pub plates: Option<PathBuf>,
    /// Household statuses to import at start (`.csv`: household, status), for quarantined
    /// households.
    pub households: Option<PathBuf>,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            import: None,
            max_residents: default_max_residents(),
            passes: None,
            plates: None,
            households: None,
        }
    }
}

fn default_max_residents() -> usize {
    300_000
}

impl RegistrySection {
    pub(super) fn problems(&self, path: &str, out: &mut Problems) {
        let files = [
            ("import", &self.import),
            ("passes", &self.passes),
            ("plates", &self.plates),
            ("households", &self.households),
        ];
        for (name, file) in files {
            if let Some(f) = file.as_ref().filter(|f| !f.is_file()) {
                out.add(
                    format!("{path}.{name}"),
                    format!("{} does not exist", f.display()),
                );
            }
        }
    }
}
