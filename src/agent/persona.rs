//! The two agents' personas: who they are (system text) and the options
//! they run with unless told otherwise. Built in, or read from a TOML file:
//!
//! ```toml
//! [collector]                 # or [insight]; either table may be left out
//! name = "DataCollector-9000"
//! label = "Chimera Agent A"   # the report's title and Agent Type
//! system = """You are ..."""
//!
//! [collector.options]         # any Options field: temperature, top_k, top_p,
//! temperature = 0.6           # min_p, repeat_penalty, repeat_last_n, seed,
//! num_ctx = 4096              # num_predict, num_ctx, stop
//! ```
//!
//! Every key is optional: what a file leaves out keeps the built-in value
//! (options key by key). Unknown keys are errors, so typos do not pass
//! silently.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::options::OptionOverrides;

/// The two agents of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// DataCollector-9000: the data inventory.
    Collector,
    /// InsightAgent: performance insights and recommendations.
    Insight,
}

impl AgentKind {
    pub const ALL: [AgentKind; 2] = [AgentKind::Collector, AgentKind::Insight];

    /// `collector` or `insight`: the key in flags, files and JSON.
    pub fn key(self) -> &'static str {
        match self {
            AgentKind::Collector => "collector",
            AgentKind::Insight => "insight",
        }
    }
}

/// One agent's identity and default options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Persona {
    pub name: String,
    pub label: String,
    /// Sent as the system text of both calls.
    pub system: String,
    /// Applied over the engine defaults, before any flag.
    pub options: OptionOverrides,
}

const COLLECTOR_SYSTEM: &str = "\
You are DataCollector-9000, a systems analyst who takes stock of benchmark artifacts before anyone draws conclusions from them.
Write a short data inventory as bullet points that covers:
1. Which folders were scanned (reports/, csv_data/, artifacts/) and what each one holds.
2. How many files of each type (CSV, JSON, Markdown) there are, and the newest modification time.
3. Gaps: missing telemetry, failed or empty runs, and anything that could mislead a model evaluation.
Stay under 250 words. Use only figures that appear in the data you are given, so a second agent can build on them.";

const INSIGHT_SYSTEM: &str = "\
You are InsightAgent, an LLM operations specialist who turns benchmark results into decisions.
From the data you are given, write:
1. An executive summary of model performance.
2. Three optimisation recommendations that weigh throughput, time to first token (TTFT) and output quality against each other.
3. A risk and mitigation table with at least two rows.
Use 300 to 400 words, numbered sections and bold for every metric you cite. Quote figures only as they appear in the data.";

impl Persona {
    /// The built-in persona of `kind`.
    pub fn builtin(kind: AgentKind) -> Self {
        match kind {
            AgentKind::Collector => Self {
                name: "DataCollector-9000".into(),
                label: "Chimera Agent A".into(),
                system: COLLECTOR_SYSTEM.into(),
                // An inventory wants few surprises: a cooler temperature.
                options: OptionOverrides {
                    temperature: Some(0.6),
                    num_ctx: Some(4096),
                    ..Default::default()
                },
            },
            AgentKind::Insight => Self {
                name: "InsightAgent".into(),
                label: "Chimera Insight".into(),
                system: INSIGHT_SYSTEM.into(),
                options: OptionOverrides {
                    temperature: Some(0.8),
                    num_ctx: Some(4096),
                    ..Default::default()
                },
            },
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonaPatch {
    name: Option<String>,
    label: Option<String>,
    system: Option<String>,
    options: Option<OptionOverrides>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonaFile {
    collector: Option<PersonaPatch>,
    insight: Option<PersonaPatch>,
}

impl PersonaPatch {
    fn apply(self, p: &mut Persona) -> Result<()> {
        for (field, v) in [
            ("name", &self.name),
            ("label", &self.label),
            ("system", &self.system),
        ] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                anyhow::bail!("`{field}` must not be empty");
            }
        }
        if let Some(v) = self.name {
            p.name = v;
        }
        if let Some(v) = self.label {
            p.label = v;
        }
        if let Some(v) = self.system {
            p.system = v;
        }
        if let Some(o) = self.options {
            let mut merged = p.options.clone();
            merge(&mut merged, o);
            p.options = merged;
        }
        Ok(())
    }
}

/// Keys set in `over` replace those in `base`.
fn merge(base: &mut OptionOverrides, over: OptionOverrides) {
    macro_rules! take {
        ($($f:ident),*) => {$( if over.$f.is_some() { base.$f = over.$f; } )*};
    }
    take!(
        temperature,
        top_k,
        top_p,
        min_p,
        repeat_penalty,
        repeat_last_n,
        seed,
        num_predict,
        num_ctx,
        stop
    );
}

/// Both agents' personas.
#[derive(Debug, Clone, PartialEq)]
pub struct Personas {
    pub collector: Persona,
    pub insight: Persona,
}

impl Default for Personas {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Personas {
    pub fn builtin() -> Self {
        Self {
            collector: Persona::builtin(AgentKind::Collector),
            insight: Persona::builtin(AgentKind::Insight),
        }
    }

    pub fn get(&self, kind: AgentKind) -> &Persona {
        match kind {
            AgentKind::Collector => &self.collector,
            AgentKind::Insight => &self.insight,
        }
    }

    /// The built-in personas with the tables of `text` applied.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: PersonaFile = toml::from_str(text).map_err(|e| {
            // toml's messages span lines (with a source excerpt); keep the first.
            let msg = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    anyhow::anyhow!("line {line}: {msg}")
                }
                None => anyhow::anyhow!("{msg}"),
            }
        })?;
        let mut p = Self::builtin();
        if let Some(c) = file.collector {
            c.apply(&mut p.collector).context("[collector]")?;
        }
        if let Some(i) = file.insight {
            i.apply(&mut p.insight).context("[insight]")?;
        }
        Ok(p)
    }

    /// Reads a personas file (see the module docs).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read personas file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("personas file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_personas() {
        let p = Personas::builtin();
        assert_eq!(p.collector.name, "DataCollector-9000");
        assert_eq!(p.collector.label, "Chimera Agent A");
        assert_eq!(p.insight.name, "InsightAgent");
        assert_eq!(p.insight.label, "Chimera Insight");
        assert!(p.collector.system.contains("under 250 words"));
        assert!(p.insight.system.contains("at least two rows"));
        assert!(p.insight.system.contains("300 to 400 words"));
    }

    #[test]
    fn file_patches_the_builtins() {
        let p = Personas::from_toml(
            "[insight]\nlabel = \"Chimera Agent B\"\nsystem = \"Be brief.\"\n\
             [insight.options]\ntemperature = 0.2\nstop = [\"###\"]\n",
        )
        .unwrap();
        assert_eq!(p.collector, Persona::builtin(AgentKind::Collector));
        assert_eq!(p.insight.name, "InsightAgent");
        assert_eq!(p.insight.label, "Chimera Agent B");
        assert_eq!(p.insight.system, "Be brief.");
        assert_eq!(p.insight.options.temperature, Some(0.2));
        assert_eq!(
            p.insight.options.num_ctx,
            Some(4096),
            "kept from the built-in"
        );
        assert_eq!(
            p.insight.options.stop.as_deref(),
            Some(&["###".to_string()][..])
        );
    }

    #[test]
    fn file_errors_are_one_line() {
        for (text, want) in [
            (
                "[collector]\nnmae = \"x\"\n",
                "line 2: unknown field `nmae`",
            ),
            (
                "[collector.options]\ntemprature = 1\n",
                "line 2: unknown field `temprature`",
            ),
            ("[other]\n", "unknown field `other`"),
            ("[insight]\nsystem = \"  \"\n", "`system` must not be empty"),
            ("[insight\n", "line 1"),
        ] {
            let e = format!("{:#}", Personas::from_toml(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
