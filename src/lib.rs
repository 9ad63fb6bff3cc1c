//! chimera: runs Gemma 3 inside its own process and turns folders of benchmark
//! artifacts into technical reports, timing every token it generates.
//!
//! Data flows one way: [`ingest`] reads an artifact tree, [`agent`] builds
//! prompts from it, [`engine`] runs them on a [`model`], and [`report`]
//! renders what it is handed. Nothing downstream reaches back upstream.

pub mod agent;
pub mod batch;
pub mod bench;
pub mod cli;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod engine;
pub mod ingest;
pub mod model;
pub mod models;
pub mod report;
