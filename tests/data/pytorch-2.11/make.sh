#!/usr/bin/env bash
# Regenerates these fixtures: files written by PyTorch 2.11's torch.save,
# which autosnap's reader (built on LibTorch 1.13) must load. Needs a Python
# with torch 2.11 and a CUDA GPU (for cuda_state_dict.pt); Debian's
# python3-torch is 1.13, so this was run once on a GPU machine:
#   PYTHON=python3 tests/data/pytorch-2.11/make.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=tests/data/pytorch-2.11
python=${PYTHON:-python3}
"$python" tests/python/interop.py write "$out"
"$python" tests/python/optimizer_interop.py start "$out" 3
for kind in SGD Adam AdamW RMSprop Adagrad LBFGS; do cp "$out/py-start-$kind.pt" "$out/cpp-$kind.pt"; done
"$python" tests/python/optimizer_interop.py continue "$out" 3
rm "$out"/cpp-*.pt
"$python" - "$out" <<'PY'
import sys, torch
sys.path.insert(0, "tests/python")
import interop
net = interop.Net().cuda()
torch.save(net.state_dict(), f"{sys.argv[1]}/cuda_state_dict.pt")
torch.save({k: v.cpu() for k, v in net.state_dict().items()}, f"{sys.argv[1]}/cuda_state_dict_cpu.pt")
PY
