//! `[[rules]]` compiled once: the first rule whose `match` fits the exam decides which
//! priors are wanted. An empty `match` fits every exam (the `default` rule).
//!
//! Codes (modality, body part, procedure code) compare case-insensitively; regexes
//! (procedure text, study description) are case-insensitive too, because RIS and
//! archives disagree on case.

use crate::exam::Exam;
use crate::rule_config::RuleConfig;
use regex::{Regex, RegexBuilder};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("rules[{index}].{field}: bad regex: {source}")]
    Regex {
        index: usize,
        field: &'static str,
        #[source]
        source: regex::Error,
    },
}

/// An exam attribute a rule's `match` tests, for saying which one an exam lacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleInput {
    Modality,
    BodyPart,
    ProcedureCode,
    ProcedureText,
}

impl RuleInput {
    /// The exam field's name (`modality`, `body_part`, ...); `match.<name>` in a rule.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleInput::Modality => "modality",
            RuleInput::BodyPart => "body_part",
            RuleInput::ProcedureCode => "procedure_code",
            RuleInput::ProcedureText => "procedure_text",
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    match_modality: Vec<String>,
    match_body_part: Vec<String>,
    match_procedure_code: Vec<String>,
    match_procedure_text: Option<Regex>,
    /// Priors of the exam's own modality are wanted (besides `modalities`).
    pub same_modality: bool,
    /// Upper-cased modality codes wanted; empty (and no `same_modality`) means any.
    pub modalities: Vec<String>,
    /// Upper-cased body parts wanted; empty means any.
    pub body_parts: Vec<String>,
    pub lookback: Duration,
    pub max: u32,
    pub description: Option<Regex>,
}

fn upper(list: &[String]) -> Vec<String> {
    list.iter().map(|s| s.trim().to_ascii_uppercase()).filter(|s| !s.is_empty()).collect()
}

fn regex(pattern: &Option<String>, index: usize, field: &'static str) -> Result<Option<Regex>, RuleError> {
    pattern
        .as_deref()
        .map(|p| {
            RegexBuilder::new(p).case_insensitive(true).build().map_err(|source| RuleError::Regex {
                index,
                field,
                source,
            })
        })
        .transpose()
}

/// `list` empty: any value fits; otherwise the value must be present and listed.
fn fits(list: &[String], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|l| l.eq_ignore_ascii_case(v.trim())))
}

impl Rule {
    pub fn compile(index: usize, config: &RuleConfig) -> Result<Rule, RuleError> {
        Ok(Rule {
            name: config.name.clone(),
            match_modality: upper(&config.matches.modality),
            match_body_part: upper(&config.matches.body_part),
            match_procedure_code: upper(&config.matches.procedure_code),
            match_procedure_text: regex(&config.matches.procedure_text, index, "match.procedure_text")?,
            same_modality: config.priors.same_modality,
            modalities: upper(&config.priors.modalities),
            body_parts: upper(&config.priors.body_part),
            lookback: config.priors.lookback,
            max: config.priors.max,
            description: regex(&config.priors.description, index, "priors.description")?,
        })
    }

    /// Does this rule apply to the exam?
    pub fn matches(&self, exam: &Exam) -> bool {
        fits(&self.match_modality, exam.modality.as_deref())
            && fits(&self.match_body_part, exam.body_part.as_deref())
            && fits(&self.match_procedure_code, exam.procedure_code.as_deref())
            && self
                .match_procedure_text
                .as_ref()
                .is_none_or(|re| exam.procedure_text.as_deref().is_some_and(|t| re.is_match(t)))
    }

    /// The inputs this rule's `match` tests that the exam lacks, when they alone keep the
    /// rule from applying: every test on an input the exam has fits. Empty when the rule
    /// applies, or when an input the exam has does not fit anyway.
    pub fn missing_inputs(&self, exam: &Exam) -> Vec<RuleInput> {
        let present = |v: Option<&str>| v.is_some_and(|v| !v.trim().is_empty());
        let text_fits =
            |v: Option<&str>| self.match_procedure_text.as_ref().is_none_or(|re| v.is_some_and(|t| re.is_match(t)));
        let tests = [
            (RuleInput::Modality, !self.match_modality.is_empty(), exam.modality.as_deref()),
            (RuleInput::BodyPart, !self.match_body_part.is_empty(), exam.body_part.as_deref()),
            (RuleInput::ProcedureCode, !self.match_procedure_code.is_empty(), exam.procedure_code.as_deref()),
            (RuleInput::ProcedureText, self.match_procedure_text.is_some(), exam.procedure_text.as_deref()),
        ];
        let mut missing = Vec::new();
        for (input, tested, value) in tests {
            if !tested {
                continue;
            }
            if !present(value) {
                missing.push(input);
                continue;
            }
            let fits_here = match input {
                RuleInput::Modality => fits(&self.match_modality, value),
                RuleInput::BodyPart => fits(&self.match_body_part, value),
                RuleInput::ProcedureCode => fits(&self.match_procedure_code, value),
                RuleInput::ProcedureText => text_fits(value),
            };
            if !fits_here {
                return Vec::new();
            }
        }
        missing
    }

    /// The modalities wanted for this exam; empty means any.
    pub fn wanted_modalities(&self, exam: &Exam) -> Vec<String> {
        let mut wanted = self.modalities.clone();
        if self.same_modality
            && let Some(m) = exam.modality.as_deref().map(|m| m.trim().to_ascii_uppercase()).filter(|m| !m.is_empty())
            && !wanted.contains(&m)
        {
            wanted.push(m);
        }
        wanted
    }
}

/// The rules in configuration order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn compile(configs: &[RuleConfig]) -> Result<RuleSet, RuleError> {
        let rules = configs.iter().enumerate().map(|(i, c)| Rule::compile(i, c)).collect::<Result<_, _>>()?;
        Ok(RuleSet { rules })
    }

    /// The first rule that fits; `None` when no rule (not even a default) does.
    pub fn pick(&self, exam: &Exam) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(exam))
    }
}
