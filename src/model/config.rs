//! The architecture numbers of a Gemma 3 text model.

use serde::Serialize;

/// Everything the forward pass needs to know about the model's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    /// Rope base of the global (full-attention) layers.
    pub rope_theta: f32,
    /// Rope base of the sliding-window layers.
    pub rope_local_base_freq: f32,
    /// Linear rope scaling of the global layers (positions are divided by it).
    pub rope_scaling_factor: f32,
    pub sliding_window: usize,
    /// Every `sliding_window_pattern`-th layer is global; the others slide.
    pub sliding_window_pattern: usize,
    /// Per-layer sliding flags, for a `config.json` whose `layer_types`
    /// follow no single period; when set it overrides
    /// `sliding_window_pattern`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sliding_layers: Option<Vec<bool>>,
    /// Queries are scaled by `1 / sqrt(query_pre_attn_scalar)`.
    pub query_pre_attn_scalar: f32,
    /// The context length the model was trained for.
    pub max_position_embeddings: usize,
    /// Gemma 3 stores its RMSNorm weights as offsets from 1 in Hugging Face
    /// checkpoints; GGUF converters add the 1 in. True when the loader must
    /// add it.
    pub norm_weight_offset: bool,
}

impl Config {
    /// Whether layer `i` attends over the sliding window only.
    pub fn is_sliding(&self, layer: usize) -> bool {
        if let Some(flags) = &self.sliding_layers {
            return flags.get(layer).copied().unwrap_or(true);
        }
        self.sliding_window_pattern == 0 || !(layer + 1).is_multiple_of(self.sliding_window_pattern)
    }

    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    pub fn attn_scale(&self) -> f32 {
        1.0 / self.query_pre_attn_scalar.sqrt()
    }

    /// Checks the numbers fit together; a corrupt header fails here with a
    /// message instead of panicking later in the forward pass.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("sliding_window", self.sliding_window),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, v) in positive {
            anyhow::ensure!(v > 0, "model config: {name} must be positive");
        }
        anyhow::ensure!(
            self.num_attention_heads
                .is_multiple_of(self.num_key_value_heads),
            "model config: {} attention heads cannot share {} key/value heads",
            self.num_attention_heads,
            self.num_key_value_heads
        );
        anyhow::ensure!(
            self.head_dim.is_multiple_of(2),
            "model config: head_dim must be even for rope"
        );
        anyhow::ensure!(
            self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0,
            "model config: bad rms_norm_eps"
        );
        if let Some(flags) = &self.sliding_layers {
            anyhow::ensure!(
                flags.len() == self.num_hidden_layers,
                "model config: {} per-layer sliding flags for {} layers",
                flags.len(),
                self.num_hidden_layers
            );
        }
        anyhow::ensure!(
            self.rope_theta > 0.0
                && self.rope_local_base_freq > 0.0
                && self.rope_scaling_factor > 0.0,
            "model config: rope bases and scaling must be positive"
        );
        Ok(())
    }

    /// The published Gemma 3 values that GGUF metadata does not carry,
    /// derived from the sizes it does: 4B and larger (hidden 2560+) scale
    /// global rope by 8; the 27B (62 layers) scales queries by
    /// hidden / heads instead of the head size.
    pub fn gemma3_defaults(
        hidden_size: usize,
        num_layers: usize,
        heads: usize,
        head_dim: usize,
    ) -> (f32, f32) {
        let rope_scaling = if hidden_size >= 2560 { 8.0 } else { 1.0 };
        let qpas = if num_layers == 62 {
            (hidden_size / heads) as f32
        } else {
            head_dim as f32
        };
        (rope_scaling, qpas)
    }

    /// A tiny configuration for tests.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 300,
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 6,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 32,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            rope_local_base_freq: 10_000.0,
            rope_scaling_factor: 1.0,
            sliding_window: 8,
            sliding_window_pattern: 6,
            sliding_layers: None,
            query_pre_attn_scalar: 32.0,
            max_position_embeddings: 4096,
            norm_weight_offset: false,
        }
    }
}
