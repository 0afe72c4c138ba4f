//! The pages' words, from one TOML file per language: Chinese (`labels/zh-CN.toml`) built in,
//! another named in the configuration. A file missing a key the built-in one has is refused at
//! start, with the keys it lacks.
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;

pub const ZH_CN: &str = include_str!("../../labels/zh-CN.toml");

#[derive(Debug, Clone)]
pub struct Labels(HashMap<String, String>);

impl Labels {
    pub fn builtin() -> Labels {
        // The built-in file is checked by a test; a broken one is a build that fails its tests.
        Labels(toml::from_str(ZH_CN).unwrap_or_default())
    }

    /// A language file, checked against the built-in one.
    pub fn load(path: &Path) -> anyhow::Result<Labels> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let map: HashMap<String, String> =
            toml::from_str(&text).with_context(|| path.display().to_string())?;
        let mut missing: Vec<_> = Labels::builtin()
            .0
            .into_keys()
            .filter(|k| !map.contains_key(k))
            .collect();
        missing.sort();
        anyhow::ensure!(
            missing.is_empty(),
            "{} lacks the labels {}",
            path.display(),
            missing.join(", ")
        );
        Ok(Labels(map))
    }

    /// A label; a key with none shows as itself (found by the test below, never by a user).
    pub fn get<'a>(&'a self, key: &'a str) -> &'a str {
        self.0.get(key).map_or(key, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    /// Every `t("…")` in the web pages' sources has a label in the built-in file.
    #[test]
    fn every_label_the_pages_use_is_in_the_builtin_file() {
        let labels: std::collections::HashMap<String, String> =
            toml::from_str(super::ZH_CN).expect("labels/zh-CN.toml parses");
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/web");
        let mut used = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for piece in src.split(".t(\"").skip(1) {
                let key = piece.split('"').next().unwrap();
                assert!(labels.contains_key(key), "no label for {key:?}");
                used += 1;
            }
        }
        assert!(
            used > 50,
            "only {used} labels found: is the pattern still right?"
        );
        // And the labels named at run time.
        let dynamic = crate::web::pages::COMMUNITY_FORMS
            .iter()
            .map(|(_, l)| l.to_string())
            .chain(crate::web::pages::FIGURES.iter().map(|l| l.to_string()))
            .chain(
                crate::web::store::ACK_KINDS
                    .iter()
                    .map(|k| format!("alarm_{k}")),
            );
        for key in dynamic {
            assert!(labels.contains_key(&key), "no label for {key:?}");
        }
    }
}
