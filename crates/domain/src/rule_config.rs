//! `[[rules]]` as the config file spells them (compiled by `rules.rs`). They live here,
//! with the vocabulary, so that the config crate depends on the domain and not the reverse.

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    #[serde(default)]
    pub modality: Vec<String>,
    #[serde(default)]
    pub body_part: Vec<String>,
    #[serde(default)]
    pub procedure_code: Vec<String>,
    /// Regex on the procedure text.
    #[serde(default)]
    pub procedure_text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorSelection {
    /// Priors of the exam's own modality (in addition to `modalities`).
    #[serde(default)]
    pub same_modality: bool,
    #[serde(default)]
    pub modalities: Vec<String>,
    #[serde(default)]
    pub body_part: Vec<String>,
    #[serde(with = "crate::duration")]
    pub lookback: Duration,
    pub max: u32,
    /// Regex on StudyDescription.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: RuleMatch,
    pub priors: PriorSelection,
}
