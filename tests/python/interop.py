"""Python side of the interop tests: the same cases as tests/interop_cases.cpp.

  interop.py write DIR   torch.save every case into DIR/<case>.pt
  interop.py check DIR   torch.load every case from DIR (written by C++) and compare

Exits non-zero and prints what differed on the first mismatch.
"""
import collections
import io
import os
import sys

import torch


def base_tensors():
    x = torch.arange(4, dtype=torch.int64).reshape(2, 2)
    y = torch.arange(9, dtype=torch.float64).reshape(3, 3) * 1.5
    return x, y


def dtype_cases():
    base = torch.arange(6).reshape(2, 3)
    out = collections.OrderedDict()
    for name, dtype in [("float16", torch.float16), ("float32", torch.float32),
                        ("float64", torch.float64), ("bfloat16", torch.bfloat16),
                        ("int8", torch.int8), ("int16", torch.int16), ("int32", torch.int32),
                        ("int64", torch.int64), ("uint8", torch.uint8)]:
        out[name] = (base - 2).to(dtype) if dtype != torch.uint8 else base.to(dtype)
    out["bool"] = (base % 2) == 1
    out["complex64"] = torch.complex(base.float(), -base.float())
    out["complex128"] = torch.complex(base.double() / 2, base.double())
    return out


def layout_cases():
    a = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "transposed": a.t(),
        "strided": a[:, ::2],
        "offset_view": a[1:3, 2:5],
        "zero_size": torch.empty(0, 3),
        "scalar": torch.tensor(3.5),
        "expanded": torch.arange(3.0).reshape(3, 1).expand(3, 4),
    }


class Net(torch.nn.Module):
    """Mirrors the C++ module in interop_cases.cpp: fc1, bn, fc2."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(3, 4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.fc2 = torch.nn.Linear(4, 2)
        with torch.no_grad():
            for i, p in enumerate(self.state_dict().values()):
                if p.dtype.is_floating_point:
                    p.copy_(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) / 10 - i)
                else:
                    p.fill_(7)


def cases():
    x, y = base_tensors()
    shared = torch.arange(10, dtype=torch.float32)
    net = Net()
    return collections.OrderedDict([
        ("tensor", torch.arange(12, dtype=torch.float32).reshape(3, 4)),
        ("list", [x, y]),
        ("tuple", (x, y)),
        ("dict", {"x": x, "y": y}),
        ("one_entry", {"only": x}),
        ("shared", [shared, shared[:5]]),
        ("cloned", [shared, shared[:5].clone()]),
        ("dtypes", dtype_cases()),
        ("layouts", layout_cases()),
        ("scalars", {"int": 42, "neg": -7, "big": 2 ** 40, "float": 0.25, "true": True,
                     "false": False, "none": None, "text": "h\u00e9llo \u4e16\u754c",
                     "nested": {"list": [1, 2.5, "x", None, [True]], "tuple": (1, (2, 3))},
                     "int_keys": {0: x, 7: "seven"}}),
        ("state_dict", net.state_dict()),
        ("checkpoint", {"epoch": 5, "loss": 0.125, "model_state_dict": net.state_dict()}),
    ])


def loads_weights_only(value):
    """Does this torch version's weights_only loader accept torch.save's own file of value?"""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
        return True
    except Exception:
        return False


def fail(path, message):
    print(f"MISMATCH at {path}: {message}")
    sys.exit(1)


def compare(path, got, want):
    if torch.is_tensor(want):
        if not torch.is_tensor(got):
            fail(path, f"expected a tensor, got {type(got).__name__}")
        if got.dtype != want.dtype or got.shape != want.shape:
            fail(path, f"got {got.dtype}{tuple(got.shape)}, want {want.dtype}{tuple(want.shape)}")
        if got.stride() != want.stride() or got.storage_offset() != want.storage_offset():
            fail(path, f"got stride {got.stride()} offset {got.storage_offset()}, "
                       f"want {want.stride()} offset {want.storage_offset()}")
        if not torch.equal(got, want):
            fail(path, f"values differ: got {got}, want {want}")
        return
    if isinstance(want, dict):
        if not isinstance(got, dict):
            fail(path, f"expected a dict, got {type(got).__name__}")
        if list(got.keys()) != list(want.keys()):
            fail(path, f"keys {list(got.keys())} != {list(want.keys())}")
        for k in want:
            compare(f"{path}[{k!r}]", got[k], want[k])
        return
    if isinstance(want, (list, tuple)):
        if type(got) is not type(want) or len(got) != len(want):
            fail(path, f"got {type(got).__name__} of {len(got)}, want {type(want).__name__} of {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            compare(f"{path}[{i}]", g, w)
        return
    if type(got) is not type(want) or got != want:
        fail(path, f"got {got!r}, want {want!r}")


def check_sharing(directory):
    a, b = torch.load(os.path.join(directory, "shared.pt"))
    a[0] = 100
    if b[0].item() != 100:
        fail("shared", "the view does not share storage with the base tensor after loading")
    a, b = torch.load(os.path.join(directory, "cloned.pt"))
    a[0] = 100
    if b[0].item() == 100:
        fail("cloned", "the clone shares storage with the base tensor after loading")
    net = Net()
    net.load_state_dict(torch.load(os.path.join(directory, "state_dict.pt")), strict=True)


def main():
    command, directory = sys.argv[1], sys.argv[2]
    if command == "write":
        for name, value in cases().items():
            torch.save(value, os.path.join(directory, name + ".pt"))
    elif command == "check":
        restricted = 0
        for name, want in cases().items():
            path = os.path.join(directory, name + ".pt")
            compare(name, torch.load(path), want)
            # PyTorch >= 2.6 loads with weights_only=True by default. Whatever this
            # version's restricted loader accepts from torch.save, it must accept from us.
            if loads_weights_only(want):
                compare(name + " (weights_only)", torch.load(path, weights_only=True), want)
                restricted += 1
        print(f"python: {restricted} cases also load with weights_only=True")
        check_sharing(directory)
        print("python: all cases match")
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
