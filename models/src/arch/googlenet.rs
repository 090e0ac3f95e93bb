//! GoogLeNet / Inception-v1 (Szegedy et al., 2015) as in the BVLC Caffe model that the
//! STML paper starts from: biased convolutions with ReLU, local response normalisation
//! after the first two convolution stages, ceil-mode max pools, no batch norm.
//!
//! Parameter names are the Caffe layer names with `/` replaced by `.`: `conv1.7x7_s2`,
//! `conv2.3x3_reduce`, `conv2.3x3`, then per module `inception_3a.1x1`,
//! `inception_3a.3x3_reduce`, `inception_3a.3x3`, `inception_3a.5x5_reduce`,
//! `inception_3a.5x5`, `inception_3a.pool_proj` (each with `.weight` and `.bias`). The
//! ImageNet classifier is `loss3.classifier`; the auxiliary heads `loss1.*` / `loss2.*`
//! are not part of the network.

use crate::graph::{ConvOpts, GraphBuilder, NodeId};

/// Caffe's LRN settings in GoogLeNet: `local_size` 5, alpha 1e-4, beta 0.75, k 1.
const LRN: (usize, f64, f64, f64) = (5, 1e-4, 0.75, 1.0);

/// Output channels of the four branches of one Inception module.
struct Inception {
    name: &'static str,
    c1x1: usize,
    c3x3_reduce: usize,
    c3x3: usize,
    c5x5_reduce: usize,
    c5x5: usize,
    pool_proj: usize,
}

const fn m(name: &'static str, c: [usize; 6]) -> Inception {
    Inception { name, c1x1: c[0], c3x3_reduce: c[1], c3x3: c[2], c5x5_reduce: c[3], c5x5: c[4], pool_proj: c[5] }
}

/// The modules of each stage; stages are separated by 3x3/2 max pools.
const STAGES: [&[Inception]; 3] = [
    &[m("inception_3a", [64, 96, 128, 16, 32, 32]), m("inception_3b", [128, 128, 192, 32, 96, 64])],
    &[
        m("inception_4a", [192, 96, 208, 16, 48, 64]),
        m("inception_4b", [160, 112, 224, 24, 64, 64]),
        m("inception_4c", [128, 128, 256, 24, 64, 64]),
        m("inception_4d", [112, 144, 288, 32, 64, 64]),
        m("inception_4e", [256, 160, 320, 32, 128, 128]),
    ],
    &[m("inception_5a", [256, 160, 320, 32, 128, 128]), m("inception_5b", [384, 192, 384, 48, 128, 128])],
];

/// Biased convolution + ReLU, the only layer type of the Caffe model.
fn conv_relu(b: &mut GraphBuilder, x: NodeId, name: &str, cin: usize, cout: usize, o: ConvOpts) -> NodeId {
    let y = b.conv(x, name, cin, cout, o.bias(true));
    b.relu(y)
}

/// One Inception module: 1x1 | 1x1 then 3x3 | 1x1 then 5x5 | 3x3 max pool then 1x1,
/// concatenated along channels.
fn inception(b: &mut GraphBuilder, x: NodeId, cin: usize, m: &Inception) -> (NodeId, usize) {
    let n = |leaf: &str| format!("{}.{leaf}", m.name);
    let a = conv_relu(b, x, &n("1x1"), cin, m.c1x1, ConvOpts::k(1));
    let r3 = conv_relu(b, x, &n("3x3_reduce"), cin, m.c3x3_reduce, ConvOpts::k(1));
    let c3 = conv_relu(b, r3, &n("3x3"), m.c3x3_reduce, m.c3x3, ConvOpts::k(3));
    let r5 = conv_relu(b, x, &n("5x5_reduce"), cin, m.c5x5_reduce, ConvOpts::k(1));
    let c5 = conv_relu(b, r5, &n("5x5"), m.c5x5_reduce, m.c5x5, ConvOpts::k(5));
    let pool = b.max_pool(x, 3, 1, 1, true);
    let proj = conv_relu(b, pool, &n("pool_proj"), cin, m.pool_proj, ConvOpts::k(1));
    let y = b.concat(&[a, c3, c5, proj]);
    (y, m.c1x1 + m.c3x3 + m.c5x5 + m.pool_proj)
}

/// Adds GoogLeNet from the image to the output of `inception_5b`.
///
/// # Shapes
/// - `x`: `[batch, 3, H, W]` (227 x 227 for the Caffe model, BGR, 0..255 minus mean)
/// - returns `[batch, 1024, h, w]` with `h = w = 7` at 224 or 227
pub(super) fn backbone(b: &mut GraphBuilder, x: NodeId) -> NodeId {
    let (size, alpha, beta, k) = LRN;
    let y = conv_relu(b, x, "conv1.7x7_s2", 3, 64, ConvOpts::k(7).stride(2));
    let y = b.max_pool(y, 3, 2, 0, true);
    let y = b.lrn(y, size, alpha, beta, k);
    let y = conv_relu(b, y, "conv2.3x3_reduce", 64, 64, ConvOpts::k(1));
    let y = conv_relu(b, y, "conv2.3x3", 64, 192, ConvOpts::k(3));
    let y = b.lrn(y, size, alpha, beta, k);
    let mut y = b.max_pool(y, 3, 2, 0, true);
    let mut cin = 192;
    for (i, stage) in STAGES.iter().enumerate() {
        if i > 0 {
            y = b.max_pool(y, 3, 2, 0, true);
        }
        for module in stage.iter() {
            (y, cin) = inception(b, y, cin, module);
        }
    }
    y
}
