"""Read a PyTorch checkpoint (a state dict saved by `torch.save`) into numpy arrays,
without torch: set-up converts the pretrained weights with this, so a machine without a
GPU never downloads PyTorch's Python package and its CUDA libraries.

Both of torch's formats are read:
- the zip format (torch >= 1.6): `<name>/data.pkl` plus one file per storage under
  `<name>/data/`;
- the legacy format: a sequence of pickles (magic number, protocol version, system info,
  the object, the storage keys), then each storage as a little-endian int64 element count
  followed by its raw bytes.
Only what state dicts hold is understood (tensors, dicts, lists, numbers, strings); the
unpickler refuses any other class, like `torch.load(weights_only=True)`.
"""
import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch.<Name>Storage -> numpy dtype
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # numpy has no bfloat16: widened to float32 below
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
    def __init__(self, name):
        self.name = name
        self.bfloat16 = name == "BFloat16Storage"
        self.dtype = np.dtype(np.uint16 if self.bfloat16 else STORAGE_DTYPES[name])


class LazyTensor:
    """A tensor whose storage bytes are read after the pickle (legacy format)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self, storages):
        key, view_offset, stype = self.storage
        flat = storages[key]
        if stype.bfloat16:
            flat = (flat.astype(np.uint32) << 16).view(np.float32)
        start = view_offset + self.offset
        if not self.size:
            return np.array(flat[start])
        item = flat.itemsize
        strided = np.lib.stride_tricks.as_strided(
            flat[start:], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.ascontiguousarray(strided)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
}


class Unpickler(pickle.Unpickler):
    def __init__(self, f, storages_seen):
        super().__init__(f)
        self.storages_seen = storages_seen

    def find_class(self, module, name):
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a state dict; refusing to load it")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        stype, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        view = pid[5] if len(pid) > 5 else None
        self.storages_seen[key] = (stype, numel)
        if view is not None:  # legacy views: (view_key, offset, size) into the root storage
            _view_key, offset, _size = view
            return (key, offset, stype)
        return (key, 0, stype)


def _materialise(obj, storages):
    if isinstance(obj, LazyTensor):
        return obj.array(storages)
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v, storages)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_materialise(v, storages) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, storages) for v in obj)
    return obj


def _load_zip(path):
    with zipfile.ZipFile(path) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        prefix = pkl[: -len("data.pkl")]
        seen = {}
        obj = Unpickler(io.BytesIO(z.read(pkl)), seen).load()
        storages = {}
        for key, (stype, numel) in seen.items():
            raw = z.read(f"{prefix}data/{key}")
            storages[key] = np.frombuffer(raw, dtype=stype.dtype.newbyteorder("<"), count=numel)
    return _materialise(obj, storages)


def _load_legacy(path):
    with open(path, "rb") as f:
        if pickle.load(f) != LEGACY_MAGIC:
            raise ValueError(f"{path} is not a PyTorch checkpoint (wrong magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info
        seen = {}
        obj = Unpickler(f, seen).load()
        keys = pickle.load(f)
        storages = {}
        for key in keys:
            stype, _numel = seen[str(key)]
            (count,) = struct.unpack("<q", f.read(8))
            raw = f.read(count * stype.dtype.itemsize)
            if len(raw) != count * stype.dtype.itemsize:
                raise ValueError(f"{path} is truncated (storage {key})")
            storages[str(key)] = np.frombuffer(raw, dtype=stype.dtype.newbyteorder("<"), count=count)
    return _materialise(obj, storages)


def load(path):
    """The object saved in `path`, with every tensor as a numpy array."""
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)
