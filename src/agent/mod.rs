//! The agents: personas, the prompts they send, how their analysis is read
//! and the workflow that ties ingestion to the engine. Agents call the
//! engine and hand back what it produced; rendering is `report`'s job.
//!
//! * [`persona`] — DataCollector-9000 and InsightAgent, built in or from a
//!   TOML file; [`options`] the partial options they and `KEY=VALUE` flags
//!   carry.
//! * [`prompt`] — the analysis and report prompts.
//! * [`analysis`] — parsing the analysis into summary, findings and
//!   recommendations.
//! * [`workflow`] — ingest, analysis call, parse, report call, timed.

pub mod analysis;
pub mod options;
pub mod persona;
pub mod prompt;
pub mod workflow;

pub use analysis::{Analysis, Source};
pub use options::OptionOverrides;
pub use persona::{AgentKind, Persona, Personas};
pub use workflow::{
    run_agent, AgentRun, Budget, Llm, Progress, Silent, Stage, StageTimes, Task, DEFAULT_BUDGET,
};
