//! A problem found in a file the installer wrote (the config, a device profile), with its place,
//! so that every problem is reported in one pass.
use std::fmt;

/// One thing wrong with a configuration or profile file, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
