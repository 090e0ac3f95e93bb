//! The architectures this product knows, each defined once as a [`Graph`] builder plus
//! its preprocessing contract.

mod mobilenet_v2;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::graph::{GraphBuilder, NodeId};
use crate::{Error, Preprocess};

/// A backbone architecture, as the CLIs and the manifest spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    MobilenetV2,
    EfficientnetLite0,
    Resnet18,
    Resnet50,
    Googlenet,
    BnInception,
}

impl Arch {
    pub const ALL: [Arch; 6] = [
        Arch::MobilenetV2,
        Arch::EfficientnetLite0,
        Arch::Resnet18,
        Arch::Resnet50,
        Arch::Googlenet,
        Arch::BnInception,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arch::MobilenetV2 => "mobilenet_v2",
            Arch::EfficientnetLite0 => "efficientnet_lite0",
            Arch::Resnet18 => "resnet18",
            Arch::Resnet50 => "resnet50",
            Arch::Googlenet => "googlenet",
            Arch::BnInception => "bn_inception",
        }
    }

    /// Channels of the last feature map (= length of the pooled feature).
    pub fn feature_dim(self) -> usize {
        match self {
            Arch::MobilenetV2 | Arch::EfficientnetLite0 => 1280,
            Arch::Resnet18 => 512,
            Arch::Resnet50 => 2048,
            Arch::Googlenet | Arch::BnInception => 1024,
        }
    }

    /// Evaluation preprocessing at the architecture's native input size.
    pub fn preprocess(self) -> Preprocess {
        match self {
            Arch::Googlenet | Arch::BnInception => Preprocess::caffe(256, 227),
            _ => Preprocess::imagenet(256, 224),
        }
    }

    /// File name of the pretrained weights that scripts/setup.sh installs, if any.
    pub fn pretrained_file(self) -> Option<&'static str> {
        match self {
            Arch::MobilenetV2 => Some("mobilenet_v2.safetensors"),
            Arch::EfficientnetLite0 => Some("efficientnet_lite0.safetensors"),
            _ => None,
        }
    }

    /// Prefixes of classifier tensors that a backbone file may carry and that
    /// the embedding network does not use.
    pub fn classifier_prefixes(self) -> &'static [&'static str] {
        match self {
            Arch::MobilenetV2 => &["classifier."],
            Arch::EfficientnetLite0 => &["_fc."],
            Arch::Resnet18 | Arch::Resnet50 => &["fc."],
            Arch::Googlenet => &["fc.", "loss1.", "loss2.", "loss3.", "aux1.", "aux2."],
            Arch::BnInception => &["fc.", "last_linear."],
        }
    }

    /// Adds the backbone to `b`, from the image batch `x` to the last feature map
    /// `[batch, feature_dim, h, w]` (no pooling, no classifier).
    pub fn backbone(self, b: &mut GraphBuilder, x: NodeId) -> NodeId {
        match self {
            Arch::MobilenetV2 => mobilenet_v2::backbone(b, x),
            _ => todo!("{} backbone", self.name()),
        }
    }

    /// Adds the architecture's ImageNet classifier on top of a feature map, as the
    /// pretrained file names it. Only architectures whose files keep a classifier have one.
    pub fn classifier(self, b: &mut GraphBuilder, features: NodeId, num_classes: usize) -> Option<NodeId> {
        use crate::graph::LinearInit;
        let pooled = b.global_avg_pool(features);
        let (name, fdim) = match self {
            Arch::EfficientnetLite0 => ("_fc", 1280),
            Arch::MobilenetV2 => ("classifier.1", 1280),
            Arch::Resnet18 => ("fc", 512),
            Arch::Resnet50 => ("fc", 2048),
            _ => return None,
        };
        Some(b.linear(pooled, name, fdim, num_classes, true, LinearInit::Default))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Arch::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| Error::UnknownArch {
            name: s.to_string(),
            expected: Arch::ALL.map(|a| a.name()).join(", "),
        })
    }
}
