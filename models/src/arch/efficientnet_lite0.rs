//! EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant for mobile accelerators: no
//! squeeze-and-excitation, ReLU6 instead of swish, fixed stem and head), with the
//! parameter names of the pretrained package: `_conv_stem`, `_bn0`,
//! `_blocks.N._expand_conv` / `_bn0` / `_depthwise_conv` / `_bn1` / `_project_conv` /
//! `_bn2`, `_conv_head`, `_bn1` (and the classifier `_fc`).

use crate::graph::{ConvOpts, GraphBuilder, NodeId};

/// Batch-norm epsilon of the TensorFlow-trained weights.
const EPS: f64 = 1e-3;

/// One stage of mobile inverted bottlenecks.
struct Stage {
    expand: usize,
    kernel: usize,
    stride: usize,
    channels: usize,
    repeats: usize,
}

const fn stage(expand: usize, kernel: usize, stride: usize, channels: usize, repeats: usize) -> Stage {
    Stage { expand, kernel, stride, channels, repeats }
}

/// The B0 block table (width and depth multipliers 1.0).
const STAGES: [Stage; 7] = [
    stage(1, 3, 1, 16, 1),
    stage(6, 3, 2, 24, 2),
    stage(6, 5, 2, 40, 2),
    stage(6, 3, 2, 80, 3),
    stage(6, 5, 1, 112, 3),
    stage(6, 5, 2, 192, 4),
    stage(6, 3, 1, 320, 1),
];

const STEM: usize = 32;
const HEAD: usize = 1280;

/// MBConv: optional 1x1 expansion, depthwise k x k, 1x1 linear projection; identity
/// skip when the block keeps resolution and width.
fn mb_conv(b: &mut GraphBuilder, x: NodeId, p: &str, cin: usize, cout: usize, s: &Stage, stride: usize) -> NodeId {
    let hidden = cin * s.expand;
    let mut h = x;
    if s.expand != 1 {
        h = b.conv_bn(h, &format!("{p}._expand_conv"), &format!("{p}._bn0"), cin, hidden, ConvOpts::k(1), EPS);
        h = b.relu6(h);
    }
    let dw = ConvOpts::k(s.kernel).stride(stride).groups(hidden);
    h = b.conv_bn(h, &format!("{p}._depthwise_conv"), &format!("{p}._bn1"), hidden, hidden, dw, EPS);
    h = b.relu6(h);
    h = b.conv_bn(h, &format!("{p}._project_conv"), &format!("{p}._bn2"), hidden, cout, ConvOpts::k(1), EPS);
    if stride == 1 && cin == cout {
        b.add(x, h)
    } else {
        h
    }
}

/// Adds EfficientNet-Lite0 from the image to its last feature map.
///
/// # Shapes
/// - `x`: `[batch, 3, H, W]`
/// - returns `[batch, 1280, H/32, W/32]` (rounded up)
pub(super) fn backbone(b: &mut GraphBuilder, x: NodeId) -> NodeId {
    let y = b.conv_bn(x, "_conv_stem", "_bn0", 3, STEM, ConvOpts::k(3).stride(2), EPS);
    let mut y = b.relu6(y);
    let mut cin = STEM;
    let mut idx = 0;
    for s in &STAGES {
        for i in 0..s.repeats {
            let stride = if i == 0 { s.stride } else { 1 };
            y = mb_conv(b, y, &format!("_blocks.{idx}"), cin, s.channels, s, stride);
            cin = s.channels;
            idx += 1;
        }
    }
    let y = b.conv_bn(y, "_conv_head", "_bn1", cin, HEAD, ConvOpts::k(1), EPS);
    b.relu6(y)
}
