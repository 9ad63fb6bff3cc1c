//! One agent's workflow: ingest the artifacts, ask for an analysis, parse
//! it, ask for a report; every stage timed, both calls kept whole.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::analysis::{self, Analysis};
use super::persona::{AgentKind, Persona};
use super::prompt;
use crate::engine::{Engine, Generation, Observer, Options, Prompt, Quiet, Request};
use crate::ingest::{self, Facts, IngestOptions};

/// Something that generates text the way [`Engine`] does (tests use a
/// scripted stand-in).
pub trait Llm {
    fn generate(&mut self, req: &Request, obs: &mut dyn Observer) -> Result<Generation>;
}

impl Llm for Engine {
    fn generate(&mut self, req: &Request, obs: &mut dyn Observer) -> Result<Generation> {
        Engine::generate(self, req, obs)
    }
}

/// A stage of the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Ingest,
    Analysis,
    Report,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Analysis => "analysis",
            Stage::Report => "report",
        }
    }
}

/// Told which stage runs, and hands the engine its callbacks (a progress
/// display, or nothing).
pub trait Progress {
    fn stage(&mut self, stage: Stage);
    fn observer(&mut self) -> &mut dyn Observer;
}

/// No display; engine warnings still go to stderr.
pub struct Silent(Quiet);

impl Default for Silent {
    fn default() -> Self {
        Silent(Quiet)
    }
}

impl Progress for Silent {
    fn stage(&mut self, _: Stage) {}
    fn observer(&mut self) -> &mut dyn Observer {
        &mut self.0
    }
}

/// Tokens each call may generate when no `num_predict` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub analysis: usize,
    pub report: usize,
}

/// 384 tokens cover the collector's 250 words and the insight agent's 400
/// with room for headings; 768 let the report reach its six sections. At
/// 30-60 tok/s on two cores both agents finish in one to two minutes.
pub const DEFAULT_BUDGET: Budget = Budget {
    analysis: 384,
    report: 768,
};

/// Wall-clock seconds of each stage of one agent's workflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    pub ingest_s: f64,
    pub analysis_s: f64,
    pub report_s: f64,
    /// From the start of ingestion to the end of the report call.
    pub total_s: f64,
}

/// What one agent is asked to do.
#[derive(Debug, Clone)]
pub struct Task<'a> {
    pub kind: AgentKind,
    pub persona: &'a Persona,
    /// Options of both calls; an unset `num_predict` takes the budget's.
    pub options: &'a Options,
    pub budget: Budget,
    pub input: &'a Path,
    pub ingest: &'a IngestOptions,
}

/// Everything one agent's workflow produced.
#[derive(Debug, Clone)]
pub struct AgentRun {
    pub kind: AgentKind,
    pub persona: Persona,
    /// The options both calls shared (each call's own, with its
    /// `num_predict`, is in its [`Generation`]).
    pub options: Options,
    pub files_analyzed: usize,
    pub data_summary: String,
    pub facts: Facts,
    /// `Facts::to_markdown()`, for the report's Data facts appendix.
    pub facts_markdown: String,
    /// Every number in the ingested data (`Ingest::numbers`).
    pub data_numbers: Vec<f64>,
    pub analysis_prompt: String,
    pub report_prompt: String,
    pub analysis: Analysis,
    pub analysis_call: Generation,
    pub report_call: Generation,
    pub times: StageTimes,
}

impl AgentRun {
    /// The text chimera itself put in front of the model: the persona, the
    /// whole analysis prompt and the report instructions. The analysis the
    /// model wrote (quoted in the report prompt) is left out.
    pub fn given_text(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.persona.system,
            self.analysis_prompt,
            prompt::REPORT_INSTRUCTIONS
        )
    }
}

fn call_options(base: &Options, default_predict: usize) -> Options {
    let mut o = base.clone();
    if o.num_predict.is_none() {
        o.num_predict = Some(default_predict);
    }
    o
}

/// Runs the workflow of `task` on `llm`.
pub fn run_agent(llm: &mut dyn Llm, task: &Task, progress: &mut dyn Progress) -> Result<AgentRun> {
    let who = &task.persona.name;
    let t0 = Instant::now();

    progress.stage(Stage::Ingest);
    let ing = ingest::scan(task.input, task.ingest)?;
    let data_summary = ing.summary_text();
    let facts = ing.facts();
    let facts_markdown = facts.to_markdown();
    let prompt_facts = prompt::prompt_facts(&facts);
    let data_numbers = ing.numbers();
    let files_analyzed = ing.files.len();
    drop(ing);
    let ingest_s = t0.elapsed().as_secs_f64();

    progress.stage(Stage::Analysis);
    let t1 = Instant::now();
    let analysis_prompt = prompt::analysis_prompt(&data_summary, &prompt_facts);
    let req = Request {
        prompt: Prompt::Chat {
            system: Some(task.persona.system.clone()),
            user: analysis_prompt.clone(),
        },
        options: call_options(task.options, task.budget.analysis),
    };
    let analysis_call = llm
        .generate(&req, progress.observer())
        .with_context(|| format!("{who}: analysis call failed"))?;
    let analysis = analysis::parse_with_prompt(
        &analysis_call.text,
        &[&task.persona.system, &analysis_prompt],
    );
    let analysis_s = t1.elapsed().as_secs_f64();

    progress.stage(Stage::Report);
    let t2 = Instant::now();
    let report_prompt = prompt::report_prompt(&analysis, &data_summary, &prompt_facts);
    let req = Request {
        prompt: Prompt::Chat {
            system: Some(task.persona.system.clone()),
            user: report_prompt.clone(),
        },
        options: call_options(task.options, task.budget.report),
    };
    let report_call = llm
        .generate(&req, progress.observer())
        .with_context(|| format!("{who}: report call failed"))?;
    let report_s = t2.elapsed().as_secs_f64();

    Ok(AgentRun {
        kind: task.kind,
        persona: task.persona.clone(),
        options: task.options.clone(),
        files_analyzed,
        data_summary,
        facts,
        facts_markdown,
        data_numbers,
        analysis_prompt,
        report_prompt,
        analysis,
        analysis_call,
        report_call,
        times: StageTimes {
            ingest_s,
            analysis_s,
            report_s,
            total_s: t0.elapsed().as_secs_f64(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Metrics, StopReason};

    /// Answers with scripted texts and records what it was asked.
    struct Scripted {
        answers: Vec<&'static str>,
        seen: Vec<Request>,
    }

    impl Llm for Scripted {
        fn generate(&mut self, req: &Request, obs: &mut dyn Observer) -> Result<Generation> {
            let text = self.answers.remove(0).to_string();
            obs.token(1);
            self.seen.push(req.clone());
            Ok(Generation {
                model: "scripted".into(),
                prompt_token_ids: vec![],
                token_ids: vec![7; 3],
                text,
                stop_reason: StopReason::EndOfTurn,
                options: req.options.clone(),
                metrics: Metrics {
                    generated_tokens: 3,
                    ..Default::default()
                },
            })
        }
    }

    struct Recorder {
        stages: Vec<Stage>,
        quiet: Quiet,
    }

    impl Progress for Recorder {
        fn stage(&mut self, s: Stage) {
            self.stages.push(s);
        }
        fn observer(&mut self) -> &mut dyn Observer {
            &mut self.quiet
        }
    }

    #[test]
    fn stages_prompts_and_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let reports = tmp.path().join("reports");
        std::fs::create_dir(&reports).unwrap();
        std::fs::write(
            reports.join("runs.csv"),
            "model,tokens_s,ttft_ms\nm,42.5,120\n",
        )
        .unwrap();
        let mut llm = Scripted {
            answers: vec![
                "## Executive Summary\nOne file.\n## Key Findings\n- 42.5 tok/s\n## Recommendations\n- Add runs",
                "## 1. Executive Summary\nDone.",
            ],
            seen: vec![],
        };
        let persona = Persona::builtin(AgentKind::Collector);
        let options = Options {
            temperature: 0.3,
            ..Default::default()
        };
        let ingest_opts = IngestOptions::default();
        let task = Task {
            kind: AgentKind::Collector,
            persona: &persona,
            options: &options,
            budget: Budget {
                analysis: 11,
                report: 22,
            },
            input: tmp.path(),
            ingest: &ingest_opts,
        };
        let mut rec = Recorder {
            stages: vec![],
            quiet: Quiet,
        };
        let run = run_agent(&mut llm, &task, &mut rec).unwrap();
        assert_eq!(rec.stages, [Stage::Ingest, Stage::Analysis, Stage::Report]);
        assert_eq!(run.files_analyzed, 1);
        assert!(run.data_summary.starts_with("Total files analyzed: 1\n"));
        assert!(run.data_numbers.contains(&42.5));
        assert_eq!(run.analysis.key_findings, ["42.5 tok/s"]);
        assert_eq!(run.analysis.recommendations, ["Add runs"]);
        assert_eq!(run.report_call.text, "## 1. Executive Summary\nDone.");

        let (a, r) = (&llm.seen[0], &llm.seen[1]);
        assert_eq!(a.options.num_predict, Some(11));
        assert_eq!(r.options.num_predict, Some(22));
        assert_eq!(a.options.temperature, 0.3);
        let Prompt::Chat { system, user } = &r.prompt else {
            panic!("chat prompt expected")
        };
        assert_eq!(system.as_deref(), Some(persona.system.as_str()));
        assert!(user.contains("Key findings:\n1. 42.5 tok/s\n"));
        assert!(user.ends_with(prompt::REPORT_INSTRUCTIONS));
        assert!(run.given_text().contains(&run.analysis_prompt));
        assert!(
            !run.given_text().contains("Add runs"),
            "model text is not given text"
        );
        let t = run.times;
        assert!(t.total_s >= t.ingest_s + t.analysis_s + t.report_s - 1e-9);

        // A set num_predict wins over the budget.
        let fixed = Options {
            num_predict: Some(5),
            ..Default::default()
        };
        assert_eq!(call_options(&fixed, 99).num_predict, Some(5));
    }

    #[test]
    fn missing_input_is_an_error() {
        let persona = Persona::builtin(AgentKind::Insight);
        let ingest_opts = IngestOptions::default();
        let task = Task {
            kind: AgentKind::Insight,
            persona: &persona,
            options: &Options::default(),
            budget: DEFAULT_BUDGET,
            input: Path::new("/nonexistent/chimera/input"),
            ingest: &ingest_opts,
        };
        let mut llm = Scripted {
            answers: vec![],
            seen: vec![],
        };
        let e = run_agent(&mut llm, &task, &mut Silent::default()).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
