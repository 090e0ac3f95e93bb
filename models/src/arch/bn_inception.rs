//! BN-Inception (Ioffe & Szegedy, 2015), the usual deep-metric-learning backbone, laid
//! out and named as in Cadene's `pretrainedmodels.bninception` (the port of the Caffe
//! model): every convolution is biased and followed by `{name}_bn` (eps 1e-5) and ReLU;
//! names are flat, e.g. `conv1_7x7_s2`, `conv1_7x7_s2_bn`, `inception_3a_1x1`,
//! `inception_3a_double_3x3_2_bn`, `inception_3a_pool_proj`; the classifier is
//! `last_linear`.
//!
//! The two reduction modules (3c, 4e) concatenate a stride-2 convolution with a
//! ceil-mode max pool, so their input side must be even: inputs of 224 / 227 (and any
//! multiple of 32) work.

use crate::graph::{ConvOpts, GraphBuilder, NodeId};

const EPS: f64 = 1e-5;

/// How the fourth branch pools.
#[derive(Clone, Copy)]
enum Pool {
    /// 3x3/1 average pool (zero padding counted, ceil mode), then a 1x1 projection.
    Avg,
    /// 3x3/1 max pool, then a 1x1 projection (module 5b).
    Max,
}

/// One module: either a stride-1 mixed module with four branches, or a stride-2
/// reduction with two convolution branches and a max pool passing its input through.
enum Module {
    Mixed { c1x1: usize, c3x3_reduce: usize, c3x3: usize, d_reduce: usize, d3x3: usize, pool: Pool, pool_proj: usize },
    Reduction { c3x3_reduce: usize, c3x3: usize, d_reduce: usize, d3x3: usize },
}

const fn mixed(c: [usize; 6], pool: Pool) -> Module {
    Module::Mixed { c1x1: c[0], c3x3_reduce: c[1], c3x3: c[2], d_reduce: c[3], d3x3: c[4], pool, pool_proj: c[5] }
}

const fn reduction(c: [usize; 4]) -> Module {
    Module::Reduction { c3x3_reduce: c[0], c3x3: c[1], d_reduce: c[2], d3x3: c[3] }
}

const MODULES: [(&str, Module); 10] = [
    ("inception_3a", mixed([64, 64, 64, 64, 96, 32], Pool::Avg)),
    ("inception_3b", mixed([64, 64, 96, 64, 96, 64], Pool::Avg)),
    ("inception_3c", reduction([128, 160, 64, 96])),
    ("inception_4a", mixed([224, 64, 96, 96, 128, 128], Pool::Avg)),
    ("inception_4b", mixed([192, 96, 128, 96, 128, 128], Pool::Avg)),
    ("inception_4c", mixed([160, 128, 160, 128, 160, 128], Pool::Avg)),
    ("inception_4d", mixed([96, 128, 192, 160, 192, 128], Pool::Avg)),
    ("inception_4e", reduction([128, 192, 192, 256])),
    ("inception_5a", mixed([352, 192, 320, 160, 224, 128], Pool::Avg)),
    ("inception_5b", mixed([352, 192, 320, 192, 224, 128], Pool::Max)),
];

/// Biased convolution `name`, batch norm `{name}_bn`, ReLU.
fn conv_bn_relu(b: &mut GraphBuilder, x: NodeId, name: &str, cin: usize, cout: usize, o: ConvOpts) -> NodeId {
    let y = b.conv_bn(x, name, &format!("{name}_bn"), cin, cout, o.bias(true), EPS);
    b.relu(y)
}

/// Adds one module named `p`; returns its output and channel count.
fn module(b: &mut GraphBuilder, x: NodeId, p: &str, cin: usize, m: &Module) -> (NodeId, usize) {
    let n = |leaf: &str| format!("{p}_{leaf}");
    match *m {
        Module::Mixed { c1x1, c3x3_reduce, c3x3, d_reduce, d3x3, pool, pool_proj } => {
            let a = conv_bn_relu(b, x, &n("1x1"), cin, c1x1, ConvOpts::k(1));
            let r = conv_bn_relu(b, x, &n("3x3_reduce"), cin, c3x3_reduce, ConvOpts::k(1));
            let c = conv_bn_relu(b, r, &n("3x3"), c3x3_reduce, c3x3, ConvOpts::k(3));
            let r = conv_bn_relu(b, x, &n("double_3x3_reduce"), cin, d_reduce, ConvOpts::k(1));
            let d = conv_bn_relu(b, r, &n("double_3x3_1"), d_reduce, d3x3, ConvOpts::k(3));
            let d = conv_bn_relu(b, d, &n("double_3x3_2"), d3x3, d3x3, ConvOpts::k(3));
            let pooled = match pool {
                Pool::Avg => b.avg_pool(x, 3, 1, 1, true, true),
                Pool::Max => b.max_pool(x, 3, 1, 1, true),
            };
            let proj = conv_bn_relu(b, pooled, &n("pool_proj"), cin, pool_proj, ConvOpts::k(1));
            (b.concat(&[a, c, d, proj]), c1x1 + c3x3 + d3x3 + pool_proj)
        }
        Module::Reduction { c3x3_reduce, c3x3, d_reduce, d3x3 } => {
            let r = conv_bn_relu(b, x, &n("3x3_reduce"), cin, c3x3_reduce, ConvOpts::k(1));
            let c = conv_bn_relu(b, r, &n("3x3"), c3x3_reduce, c3x3, ConvOpts::k(3).stride(2));
            let r = conv_bn_relu(b, x, &n("double_3x3_reduce"), cin, d_reduce, ConvOpts::k(1));
            let d = conv_bn_relu(b, r, &n("double_3x3_1"), d_reduce, d3x3, ConvOpts::k(3));
            let d = conv_bn_relu(b, d, &n("double_3x3_2"), d3x3, d3x3, ConvOpts::k(3).stride(2));
            let pooled = b.max_pool(x, 3, 2, 0, true);
            (b.concat(&[c, d, pooled]), c3x3 + d3x3 + cin)
        }
    }
}

/// Adds BN-Inception from the image to the output of `inception_5b`.
///
/// # Shapes
/// - `x`: `[batch, 3, H, W]` (224 x 224 for the pretrained model, BGR, 0..255 minus mean)
/// - returns `[batch, 1024, H/32, W/32]`
pub(super) fn backbone(b: &mut GraphBuilder, x: NodeId) -> NodeId {
    let y = conv_bn_relu(b, x, "conv1_7x7_s2", 3, 64, ConvOpts::k(7).stride(2));
    let y = b.max_pool(y, 3, 2, 0, true);
    let y = conv_bn_relu(b, y, "conv2_3x3_reduce", 64, 64, ConvOpts::k(1));
    let y = conv_bn_relu(b, y, "conv2_3x3", 64, 192, ConvOpts::k(3));
    let mut y = b.max_pool(y, 3, 2, 0, true);
    let mut cin = 192;
    for (name, m) in &MODULES {
        (y, cin) = module(b, y, name, cin, m);
    }
    y
}
