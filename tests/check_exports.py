#!/usr/bin/env python3
"""libautosnap.so exports its public API and nothing else: every symbol it
exports is autosnap's own (a function, typeinfo or vtable in namespace
autosnap), none is of plugin/src's internal namespaces, none is an
instantiation of a dependency's templates (Boost.Asio's headers force default
visibility on theirs; the version script libautosnap.map keeps them in), and
the public API a program links against is there. Prints each problem; exits 1
if there is any."""
import re
import subprocess
import sys

library = sys.argv[1]
output = subprocess.run(["nm", "-D", "--defined-only", "-C", library], check=True, capture_output=True,
                        text=True).stdout
# "ADDRESS TYPE NAME"; the linker's own absolute symbols (_edata, _end, __bss_start) carry type A.
symbols = [line.split(" ", 2)[2] for line in output.splitlines() if line.count(" ") >= 2 and line.split(" ")[1] != "A"]

OWN = re.compile(r"^((typeinfo|typeinfo name|vtable) for )?autosnap::")
INTERNAL = re.compile(r"^((typeinfo|typeinfo name|vtable) for )?autosnap::(daemon|format|store|cluster|util|state|"
                      r"config_yaml|control)::")
EXPECTED = [
    "autosnap::Snapshotter::on_step_end(long)",
    "autosnap::Snapshotter::from_env(",
    "autosnap::Config::from_file(",
    "autosnap::save(c10::IValue const&",
    "autosnap::SnapshotStore::open_read_only(",
    "autosnap::ResumableRandomSampler::ResumableRandomSampler(",
    "typeinfo for autosnap::Error",
    "typeinfo for autosnap::CorruptSnapshot",
    "typeinfo for autosnap::UnsupportedFormat",
    "vtable for autosnap::FileSystem",
]

problems = []
for symbol in symbols:
    if not OWN.match(symbol):
        problems.append(f"exports a symbol that is not autosnap's: {symbol[:300]}")
    elif INTERNAL.match(symbol):
        problems.append(f"exports an internal symbol: {symbol[:300]}")
for expected in EXPECTED:
    if not any(symbol.startswith(expected) for symbol in symbols):
        problems.append(f"does not export {expected}")

print(f"{library}: {len(symbols)} exported symbols")
for problem in problems[:40]:
    print(problem)
if len(problems) > 40:
    print(f"... and {len(problems) - 40} more")
sys.exit(1 if problems else 0)
