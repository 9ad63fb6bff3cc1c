//! Reports: renders what it is handed into Markdown and JSON, computes the
//! run statistics and the Number check, and writes files atomically. It
//! calls no model and reads no artifacts.
//!
//! * [`markdown`] — the per-agent report (original layout plus Data facts
//!   and Number check).
//! * [`metrics`] — `metrics.json` per run and the report's Metrics block.
//! * [`summary`] — `summary.json` / `summary.md` over runs; [`stats`] the
//!   statistics they use.
//! * [`numcheck`] — figures in model text checked against known numbers.
//! * [`scenario`] — two agents at once: timing, the combined report and
//!   the scenario parts of `metrics.json` and the summary.
//! * [`output`] — the report folder layout, the overwrite policy and
//!   [`output::write_atomic`], the one function that writes report files.

pub mod markdown;
pub mod metrics;
pub mod numcheck;
pub mod output;
pub mod scenario;
pub mod stats;
pub mod summary;

pub use markdown::{AgentReport, Configuration};
pub use metrics::{AgentMetrics, CallRecord, MetricsBlock, RunMetrics};
pub use numcheck::{Known, NumberCheck};
pub use output::{write_atomic, OutputDir};
pub use stats::Stat;
pub use summary::{Summary, SummaryMeta};
