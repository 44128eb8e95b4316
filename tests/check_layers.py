#!/usr/bin/env python3
"""The layers of the README's "Layout of the code" hold: a file includes only
its own layer and the layers below it (util -> fs -> format -> state -> store
-> daemon -> cluster -> cli), every source file sits in a layer, and every
public header is assigned to one. Prints each violation; exits 1 if there is any."""
import pathlib
import re
import sys

ORDER = ["util", "fs", "format", "state", "store", "daemon", "cluster", "cli"]
# Public headers (plugin/include/autosnap/) by the layer that implements them.
PUBLIC = {
    "errors.h": "util", "export.h": "util", "version.h": "util", "torch_fwd.h": "util", "fs.h": "fs", "values.h": "format",
    "serialize.h": "state", "state_dict.h": "state", "optimizer_state.h": "state", "samplers.h": "state",
    "torchscript.h": "state", "device.h": "state",
    "manifest.h": "store", "retention.h": "store", "store.h": "store", "snapshot.h": "store",
    "config.h": "daemon", "callback.h": "daemon", "snapshotter.h": "daemon", "autosnap.h": "daemon",
    "cluster.h": "cluster", "tools.h": "store",
}

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve() / "plugin"
problems = []


def layer_of_include(name, where):
    first, _, rest = name.partition("/")
    if first == "autosnap":
        base = pathlib.Path(rest).name
        if base.endswith(".in"):
            base = base[:-3]
        if base not in PUBLIC:
            problems.append(f"{where}: includes public header {name}, which has no layer in check_layers.py")
            return None
        return PUBLIC[base]
    if first in ORDER:
        return first
    return "cli" if (root / "cli" / name).exists() else None


def check(path, layer):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
        if not match:
            continue
        target = layer_of_include(match.group(1), f"{path.relative_to(root.parent)}:{number}")
        if target and ORDER.index(target) > ORDER.index(layer):
            problems.append(f"{path.relative_to(root.parent)}:{number}: {layer} includes {match.group(1)} "
                            f"of the higher layer {target}")


for header in sorted((root / "include" / "autosnap").iterdir()):
    name = header.name[:-3] if header.name.endswith(".in") else header.name
    if name not in PUBLIC:
        problems.append(f"plugin/include/autosnap/{header.name}: public header without a layer in check_layers.py")
        continue
    check(header, PUBLIC[name])
for source in sorted((root / "src").rglob("*")):
    if source.suffix not in (".h", ".cpp"):
        continue
    layer = source.relative_to(root / "src").parts[0]
    if layer not in ORDER:
        problems.append(f"{source.relative_to(root.parent)}: not inside a layer folder ({', '.join(ORDER)})")
        continue
    check(source, layer)
for source in sorted((root / "cli").rglob("*")):
    if source.suffix in (".h", ".cpp"):
        check(source, "cli")

for problem in problems:
    print(problem)
checked = len(list((root / "src").rglob("*.*"))) + len(list((root / "include").rglob("*.*")))
print(f"layers: {checked} files checked, {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
