//! ResNet-18 and ResNet-50 (He et al., 2016) with torchvision's parameter names
//! (`conv1`, `bn1`, `layerL.B.convI` / `bnI`, `layerL.B.downsample.0` / `.1`; the
//! classifier is `fc`). ResNet-50 is torchvision's "v1.5": the stride sits on the 3x3.

use crate::graph::{ConvOpts, GraphBuilder, NodeId};

const EPS: f64 = 1e-5;

/// The residual block of a ResNet depth.
#[derive(Debug, Clone, Copy)]
enum Block {
    /// Two 3x3 convolutions (ResNet-18/34).
    Basic,
    /// 1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50/101/152).
    Bottleneck,
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// `{p}.conv{i}` followed by `{p}.bn{i}`.
fn conv_bn(b: &mut GraphBuilder, x: NodeId, p: &str, i: usize, cin: usize, cout: usize, o: ConvOpts) -> NodeId {
    b.conv_bn(x, &format!("{p}.conv{i}"), &format!("{p}.bn{i}"), cin, cout, o, EPS)
}

/// One residual block `{p}` with `planes` inner channels; returns its output
/// (`planes * expansion` channels).
fn block(b: &mut GraphBuilder, x: NodeId, p: &str, kind: Block, cin: usize, planes: usize, stride: usize) -> NodeId {
    let cout = planes * kind.expansion();
    let h = match kind {
        Block::Basic => {
            let h = conv_bn(b, x, p, 1, cin, planes, ConvOpts::k(3).stride(stride));
            let h = b.relu(h);
            conv_bn(b, h, p, 2, planes, planes, ConvOpts::k(3))
        }
        Block::Bottleneck => {
            let h = conv_bn(b, x, p, 1, cin, planes, ConvOpts::k(1));
            let h = b.relu(h);
            let h = conv_bn(b, h, p, 2, planes, planes, ConvOpts::k(3).stride(stride));
            let h = b.relu(h);
            conv_bn(b, h, p, 3, planes, cout, ConvOpts::k(1))
        }
    };
    let shortcut = if stride != 1 || cin != cout {
        let o = ConvOpts::k(1).stride(stride);
        b.conv_bn(x, &format!("{p}.downsample.0"), &format!("{p}.downsample.1"), cin, cout, o, EPS)
    } else {
        x
    };
    let y = b.add(h, shortcut);
    b.relu(y)
}

/// Stem (7x7/2 conv, 3x3/2 max pool) and four stages of `blocks[i]` residual blocks.
///
/// # Shapes
/// - `x`: `[batch, 3, H, W]`
/// - returns `[batch, 512 * expansion, H/32, W/32]` (rounded up)
fn resnet(b: &mut GraphBuilder, x: NodeId, kind: Block, blocks: [usize; 4]) -> NodeId {
    let y = b.conv_bn(x, "conv1", "bn1", 3, 64, ConvOpts::k(7).stride(2), EPS);
    let y = b.relu(y);
    let mut y = b.max_pool(y, 3, 2, 1, false);
    let mut cin = 64;
    for (stage, &n) in blocks.iter().enumerate() {
        let planes = 64 << stage;
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            y = block(b, y, &format!("layer{}.{i}", stage + 1), kind, cin, planes, stride);
            cin = planes * kind.expansion();
        }
    }
    y
}

/// ResNet-18: `[batch, 3, H, W]` to `[batch, 512, H/32, W/32]`.
pub(super) fn resnet18(b: &mut GraphBuilder, x: NodeId) -> NodeId {
    resnet(b, x, Block::Basic, [2, 2, 2, 2])
}

/// ResNet-50: `[batch, 3, H, W]` to `[batch, 2048, H/32, W/32]`.
pub(super) fn resnet50(b: &mut GraphBuilder, x: NodeId) -> NodeId {
    resnet(b, x, Block::Bottleneck, [3, 4, 6, 3])
}
