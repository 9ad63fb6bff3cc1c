//! The inference engine: options, sampling, the decode loop and what it
//! measures. It knows nothing of agents or reports.

pub mod batch;
pub mod generate;
pub mod gpu;
pub mod metrics;
pub mod options;
pub mod sampler;
mod sequence;

pub use batch::{channel, BatchMetrics, Client, Inbox};
pub use generate::{Engine, Generation, Observer, Prompt, Quiet, Request, StopReason};
pub use metrics::Metrics;
pub use options::Options;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
    /// CUDA when this build has it and a GPU is present, else the CPU.
    #[default]
    Auto,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(format!(
                    "unknown device `{s}` (expected cpu, cuda, cuda:N or auto)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Auto => write!(f, "auto"),
        }
    }
}

/// How an engine is set up (not per request).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// CPU threads; `None` uses every available core.
    pub threads: Option<usize>,
    /// Most prompt tokens per forward pass.
    pub ubatch: usize,
    pub device: Device,
    /// Layers on the GPU (Ollama's `num_gpu`); `None` puts all there.
    pub num_gpu: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: None,
            ubatch: 512,
            device: Device::Auto,
            num_gpu: None,
        }
    }
}
