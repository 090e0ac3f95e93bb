//! MobileNetV2 1.0 (Sandler et al., 2018), torchvision parameter names.

use crate::graph::{ConvOpts, GraphBuilder, NodeId};

const EPS: f64 = 1e-5;

/// Conv + BN + ReLU6 as torchvision's `Conv2dNormActivation` (`{p}.0` conv, `{p}.1` bn).
fn conv_bn_relu6(b: &mut GraphBuilder, x: NodeId, p: &str, cin: usize, cout: usize, o: ConvOpts) -> NodeId {
    let y = b.conv_bn(x, &format!("{p}.0"), &format!("{p}.1"), cin, cout, o, EPS);
    b.relu6(y)
}

pub(super) fn backbone(b: &mut GraphBuilder, x: NodeId) -> NodeId {
    // t (expansion), c (channels), n (repeats), s (first stride)
    const SETTINGS: [(usize, usize, usize, usize); 7] =
        [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
    let mut y = conv_bn_relu6(b, x, "features.0", 3, 32, ConvOpts::k(3).stride(2));
    let mut cin = 32;
    let mut idx = 1;
    for (t, c, n, s) in SETTINGS {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let p = format!("features.{idx}.conv");
            let hidden = cin * t;
            let mut h = y;
            let mut j = 0;
            if t != 1 {
                h = conv_bn_relu6(b, h, &format!("{p}.0"), cin, hidden, ConvOpts::k(1));
                j = 1;
            }
            h = conv_bn_relu6(b, h, &format!("{p}.{j}"), hidden, hidden, ConvOpts::k(3).stride(stride).groups(hidden));
            h = b.conv_bn(h, &format!("{p}.{}", j + 1), &format!("{p}.{}", j + 2), hidden, c, ConvOpts::k(1), EPS);
            y = if stride == 1 && cin == c { b.add(y, h) } else { h };
            cin = c;
            idx += 1;
        }
    }
    conv_bn_relu6(b, y, &format!("features.{idx}"), cin, 1280, ConvOpts::k(1))
}
