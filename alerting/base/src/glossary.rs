//! The field's words, in one file: `alerting/base/glossary.json` names every stage (预警 warning,
//! 响应 response, 应案 handling, 反馈 feedback), severity (火警 fire, 预警信号 pre-alarm,
//! 故障 fault, 测试 test ...), level, disposition, cause, device kind, camera event and
//! transition in Chinese and English. The console loads the same file (`/console/glossary.json`)
//! and the gateway titles its pages from it, so an officer reads one word for one thing
//! everywhere. [`Glossary::get`] parses it once.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::Deserialize;

/// The glossary file, as served to the console.
pub const JSON: &str = include_str!("../glossary.json");

/// One term in both languages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    /// Chinese, what the duty officers read first.
    pub zh: String,
    /// English.
    pub en: String,
}

/// Every group of terms: `stage`, `severity`, `level`, `outcome`, `cause`, `method`,
/// `device_kind`, `camera_event`, `transition`, each from the API's stable name to its words.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Glossary(BTreeMap<String, BTreeMap<String, Term>>);

static GLOSSARY: LazyLock<Glossary> =
    LazyLock::new(|| serde_json::from_str(JSON).expect("glossary.json parses (a unit test checks it)"));

impl Glossary {
    /// The embedded glossary, parsed on first use.
    pub fn get() -> &'static Glossary {
        &GLOSSARY
    }

    /// The term for `name` in `group`, if the glossary has one.
    pub fn term(&self, group: &str, name: &str) -> Option<&Term> {
        self.0.get(group)?.get(name)
    }

    /// The group's terms, by stable name.
    pub fn group(&self, group: &str) -> Option<&BTreeMap<String, Term>> {
        self.0.get(group)
    }
}

/// `火警 Fire`: the Chinese and the English word of a severity, for page titles; `None` for a
/// severity the glossary does not know.
pub fn severity(name: &str) -> Option<&'static str> {
    static LABELS: LazyLock<BTreeMap<String, String>> = LazyLock::new(|| {
        let terms = Glossary::get().group("severity").cloned().unwrap_or_default();
        terms.into_iter().map(|(name, t)| (name, format!("{} {}", t.zh, t.en))).collect()
    });
    LABELS.get(name).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_glossary_parses_and_every_group_is_there() {
        let g = Glossary::get();
        for group in [
            "stage",
            "severity",
            "level",
            "outcome",
            "cause",
            "method",
            "device_kind",
            "camera_event",
            "transition",
        ] {
            assert!(g.group(group).is_some_and(|terms| !terms.is_empty()), "group {group} is missing");
        }
        for severity in firegrid_alerting::Severity::ALL {
            assert!(g.term("severity", severity.as_str()).is_some(), "{severity:?} has no term");
        }
    }

    /// The words that collided on the console (a fire row read "预警 · 区"): no severity is
    /// called by a stage's word, in either language.
    #[test]
    fn no_severity_shares_a_word_with_a_stage() {
        let g = Glossary::get();
        for stage in g.group("stage").unwrap().values() {
            for (name, severity) in g.group("severity").unwrap() {
                assert_ne!(stage.zh, severity.zh, "severity {name} is called like a stage");
                assert_ne!(stage.en, severity.en, "severity {name} is called like a stage");
            }
        }
        assert_eq!(severity("pre_alarm"), Some("预警信号 Pre-alarm"));
        assert_eq!(severity("gas_leak"), None);
    }
}
