//! The architectures this product knows, each defined once as a [`Graph`] builder plus
//! its preprocessing contract.

mod bn_inception;
mod efficientnet_lite0;
mod googlenet;
mod mobilenet_v2;
mod resnet;

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
            Arch::EfficientnetLite0 => efficientnet_lite0::backbone(b, x),
            Arch::Resnet18 => resnet::resnet18(b, x),
            Arch::Resnet50 => resnet::resnet50(b, x),
            Arch::Googlenet => googlenet::backbone(b, x),
            Arch::BnInception => bn_inception::backbone(b, x),
        }
    }

    /// Adds the architecture's ImageNet classifier (global average pool, then a linear
    /// layer named as in the usual pretrained files: `_fc`, `classifier.1`, `fc`,
    /// `loss3.classifier`, `last_linear`). Every current architecture has one; `None` is
    /// kept for architectures whose files carry no classifier.
    ///
    /// # Shapes
    /// - `features`: `[batch, feature_dim, h, w]`; returns `[batch, num_classes]`
    pub fn classifier(self, b: &mut GraphBuilder, features: NodeId, num_classes: usize) -> Option<NodeId> {
        use crate::graph::LinearInit;
        let name = match self {
            Arch::EfficientnetLite0 => "_fc",
            Arch::MobilenetV2 => "classifier.1",
            Arch::Resnet18 | Arch::Resnet50 => "fc",
            Arch::Googlenet => "loss3.classifier",
            Arch::BnInception => "last_linear",
        };
        let pooled = b.global_avg_pool(features); // [batch, feature_dim]
        Some(b.linear(pooled, name, self.feature_dim(), num_classes, true, LinearInit::Default))
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
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| Error::UnknownArch { name: s.to_string(), expected: Arch::ALL.map(|a| a.name()).join(", ") })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use super::*;
    use crate::graph::{Graph, ParamKind};
    use crate::weights::Weights;
    use crate::ModelConfig;

    fn backbone_graph(arch: Arch) -> Graph {
        let mut b = GraphBuilder::new();
        let x = b.input();
        let y = arch.backbone(&mut b, x);
        b.output("features", y);
        b.finish()
    }

    fn trainable(g: &Graph) -> usize {
        g.params().iter().filter(|p| p.kind == ParamKind::Trainable).map(|p| p.shape.iter().product::<usize>()).sum()
    }

    /// Trainable backbone parameters (no classifier) of the reference implementations:
    /// torchvision for ResNet / MobileNetV2, the pretrained file for EfficientNet-Lite0,
    /// the BVLC Caffe model for GoogLeNet (6,998,552 with its classifier), Cadene's port
    /// for BN-Inception (11,295,240 with its classifier).
    #[test]
    fn backbone_parameter_counts_match_the_reference_models() {
        for (arch, expected) in [
            (Arch::MobilenetV2, 2_223_872),
            (Arch::EfficientnetLite0, 3_371_008),
            (Arch::Resnet18, 11_176_512),
            (Arch::Resnet50, 23_508_032),
            (Arch::Googlenet, 5_973_552),
            (Arch::BnInception, 10_270_240),
        ] {
            assert_eq!(trainable(&backbone_graph(arch)), expected, "{arch}");
        }
    }

    #[test]
    fn parameter_names_are_unique() {
        for arch in Arch::ALL {
            let params = backbone_graph(arch).params();
            let names: HashSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names.len(), params.len(), "{arch}: duplicate parameter names");
        }
    }

    #[test]
    fn classifier_is_named_as_the_pretrained_files() {
        for arch in Arch::ALL {
            let g = ModelConfig::classifier_graph(arch, 1000).expect("classifier");
            let params = g.params();
            let [weight, bias] = &params[params.len() - 2..] else {
                unreachable!("a classifier has a weight and a bias")
            };
            assert_eq!(weight.shape, vec![1000, arch.feature_dim()], "{arch}");
            assert_eq!(bias.shape, vec![1000], "{arch}");
            // A backbone file that keeps its classifier loads into the embedding network.
            for p in [weight, bias] {
                assert!(
                    arch.classifier_prefixes().iter().any(|pre| p.name.starts_with(pre)),
                    "{arch}: {} is not under a classifier prefix",
                    p.name
                );
            }
        }
    }

    fn deps_file(name: &str) -> PathBuf {
        let path = PathBuf::from(env!("STML_DEPS")).join("weights").join(name);
        assert!(path.exists(), "{} is missing: run scripts/setup.sh", path.display());
        path
    }

    /// Every tensor of the installed pretrained files has a parameter of the same name and
    /// shape, and the other way round (the classifier included for EfficientNet-Lite0).
    #[test]
    fn pretrained_files_match_the_graphs_exactly() {
        for arch in [Arch::MobilenetV2, Arch::EfficientnetLite0] {
            let file = deps_file(arch.pretrained_file().expect("pretrained file"));
            let w = Weights::read(&file).expect("readable weights");
            let pooled = ModelConfig::pooled_graph(arch);
            w.check(arch.name(), &pooled.params(), arch.classifier_prefixes(), &|_| false)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let arch = Arch::EfficientnetLite0;
        let w = Weights::read(&deps_file("efficientnet_lite0.safetensors")).expect("readable weights");
        let classifier = ModelConfig::classifier_graph(arch, 1000).expect("classifier");
        w.check(arch.name(), &classifier.params(), &[], &|_| false).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[cfg(all(test, feature = "tch"))]
mod tch_tests {
    use tch::{nn, Device, Kind, Tensor};

    use super::*;
    use crate::net::Network;
    use crate::ModelConfig;

    /// Shapes flow through `arch`: random weights, a small random batch, output
    /// `[2, feature_dim]`, finite and not all zero.
    fn runs_on_a_small_batch(arch: Arch) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), ModelConfig::pooled_graph(arch));
        let xs = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| net.forward(&xs, false)).expect("forward");
        let emb = out.get(crate::Output::Embedding).expect("embedding output");
        assert_eq!(emb.size(), vec![2, arch.feature_dim() as i64], "{arch}");
        assert!(bool::try_from(emb.isfinite().all()).expect("bool"), "{arch}: non-finite output");
        assert!(f64::try_from(emb.abs().sum(Kind::Float)).expect("f64") > 0.0, "{arch}: all-zero output");
    }

    #[test]
    fn mobilenet_v2_runs() {
        runs_on_a_small_batch(Arch::MobilenetV2);
    }

    #[test]
    fn efficientnet_lite0_runs() {
        runs_on_a_small_batch(Arch::EfficientnetLite0);
    }

    #[test]
    fn resnet18_runs() {
        runs_on_a_small_batch(Arch::Resnet18);
    }

    #[test]
    fn resnet50_runs() {
        runs_on_a_small_batch(Arch::Resnet50);
    }

    #[test]
    fn googlenet_runs() {
        runs_on_a_small_batch(Arch::Googlenet);
    }

    #[test]
    fn bn_inception_runs() {
        runs_on_a_small_batch(Arch::BnInception);
    }
}
