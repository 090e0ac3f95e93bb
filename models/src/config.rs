//! The model configuration: which backbone, which heads, which input size. Saved in
//! every run directory, so that evaluation and export rebuild exactly what was trained.

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, GraphBuilder, LinearInit};
use crate::{Arch, Output, Preprocess};

/// Prefix of the heads' parameter names: what the backbone's pretrained weights lack.
pub const HEAD_PREFIX: &str = "head_";
/// Name of the student's target embedding head (`f` in docs/algorithm.md).
pub const HEAD_F: &str = "head_f";
/// Name of the wide head (`g` in docs/algorithm.md).
pub const HEAD_G: &str = "head_g";

/// Which of the student's heads is evaluated, exported and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// `f` (`dim`-d): the paper's embedding. Runs written before the choice existed
    /// served it, so a config without the key reads as `f`.
    #[default]
    F,
    /// `g` (`g_dim`-d): the wide head that is trained on the teacher's soft labels directly.
    G,
}

impl Head {
    /// The graph output of this head.
    pub const fn output(self) -> Output {
        match self {
            Self::F => Output::F,
            Self::G => Output::G,
        }
    }
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.output().name())
    }
}

impl std::str::FromStr for Head {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f" => Ok(Self::F),
            "g" => Ok(Self::G),
            _ => Err(format!("unknown head {s:?}: f (the paper's d-dimensional embedding) or g (the wide one)")),
        }
    }
}

/// Builds the STML networks of one architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Dimension of the target embedding `f`.
    pub dim: usize,
    /// Dimension of the wide embedding `g`.
    pub g_dim: usize,
    /// Network input size (square crop), e.g. 224.
    pub image_size: u32,
    /// L2-normalise the student's `f` and `g` outputs.
    #[serde(default)]
    pub student_norm: bool,
    /// The head that is evaluated, exported and served.
    #[serde(default)]
    pub served_head: Head,
}

impl ModelConfig {
    pub fn new(arch: Arch, dim: usize) -> Self {
        Self { arch, dim, g_dim: 1024, image_size: arch.preprocess().crop, student_norm: false, served_head: Head::F }
    }

    /// Dimension of the served head's embedding.
    pub fn served_dim(&self) -> usize {
        match self.served_head {
            Head::F => self.dim,
            Head::G => self.g_dim,
        }
    }

    /// Evaluation preprocessing at this config's input size.
    pub fn preprocess(&self) -> Preprocess {
        self.arch.preprocess().with_size(self.image_size)
    }

    fn heads(&self, with_f: bool, with_g: bool, normalize: bool) -> Graph {
        let mut b = GraphBuilder::new();
        let x = b.input();
        let features = self.arch.backbone(&mut b, x);
        let pooled = b.global_avg_max_pool(features); // [batch, feature_dim]
        b.output(Output::Pooled.name(), pooled);
        let fd = self.arch.feature_dim();
        if with_f {
            let mut f = b.linear(pooled, HEAD_F, fd, self.dim, true, LinearInit::Orthogonal);
            if normalize {
                f = b.l2_normalize(f);
            }
            b.output(Output::F.name(), f);
        }
        if with_g {
            let mut g = b.linear(pooled, HEAD_G, fd, self.g_dim, true, LinearInit::Orthogonal);
            if normalize {
                g = b.l2_normalize(g);
            }
            b.output(Output::G.name(), g);
        }
        b.finish()
    }

    /// Student: backbone, pooled feature, heads `f` and `g`. Outputs `pooled`, `f`, `g`.
    pub fn student_graph(&self) -> Graph {
        self.heads(true, true, self.student_norm)
    }

    /// Teacher: backbone and head `g` only. Outputs `pooled`, `g` (never normalised here;
    /// the pseudo-labels normalise it themselves).
    pub fn teacher_graph(&self) -> Graph {
        self.heads(false, true, false)
    }

    /// What is exported and served: outputs `embedding` = the served head, optionally
    /// L2-normalised.
    pub fn export_graph(&self, normalize: bool) -> Graph {
        let head = self.served_head;
        let mut g = self.heads(head == Head::F, head == Head::G, normalize || self.student_norm);
        for (name, _) in &mut g.outputs {
            if name == head.output().name() {
                *name = Output::Embedding.name().to_string();
            }
        }
        g.outputs.retain(|(name, _)| name == Output::Embedding.name());
        g
    }

    /// The backbone's pooled feature only (GAP + GMP): evaluating a pretrained model.
    pub fn pooled_graph(arch: Arch) -> Graph {
        let mut b = GraphBuilder::new();
        let x = b.input();
        let features = arch.backbone(&mut b, x);
        let pooled = b.global_avg_max_pool(features);
        b.output(Output::Embedding.name(), pooled);
        b.finish()
    }

    /// The backbone with its ImageNet classifier: output `logits`. `None` when the
    /// architecture's pretrained file has no classifier we know of.
    pub fn classifier_graph(arch: Arch, num_classes: usize) -> Option<Graph> {
        let mut b = GraphBuilder::new();
        let x = b.input();
        let features = arch.backbone(&mut b, x);
        let logits = arch.classifier(&mut b, features, num_classes)?;
        b.output(Output::Logits.name(), logits);
        Some(b.finish())
    }
}
