"""Split pip-compile's output into the lock without torch and the CPU torch pin (``make lock`` runs this).

Torch goes in first, on its own (its CPU or CUDA build is the user's choice: ``TORCH_SPEC``), so the lock
holds every other package, each with its hashes; ``torch-cpu.txt`` holds the default CPU build's.
Machine-specific index lines are dropped: the lock names packages and hashes only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def split(compiled: Path, lock: Path, torch: Path) -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9])", compiled.read_text())  # one block per pinned package
    header = "# Installed by `make install` after torch (requirements/torch-cpu.txt or TORCH_SPEC); from `make lock`.\n"
    kept, torch_block = [], None
    for block in blocks:
        if block.startswith(("--", "#")):
            continue
        if block.startswith("torch=="):
            torch_block = block
        else:
            kept.append(block.rstrip("\n"))
    if torch_block is None:
        raise SystemExit(f"{compiled}: no torch pin")
    lock.write_text(header + "\n".join(kept) + "\n")
    pin = torch_block.split("\n    # via")[0]
    torch.write_text("# The default CPU build of torch, installed first and on its own by `make install`.\n" + pin + "\n")


if __name__ == "__main__":
    split(*(Path(a) for a in sys.argv[1:4]))
