"""Remake the int8 twins of the shipped models (models/int8_default/ and int8_fast/) after their weights change.

`python -m speckle2self.bench.int8_twins [NAME ...]`: the named shipped models, default all. Release tooling,
kept out of the product: despeckling only reads the twins.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from .. import int8, weights
from ..inference import inference_model


def ship(name: str) -> Path:
    """Quantise the shipped model `name` into its int8.SHIPPED twin, replacing what is there."""
    net, twin = inference_model(weights.shipped_weights(name), device="cpu"), int8.SHIPPED[name]
    with tempfile.TemporaryDirectory() as folder:
        int8.quantise(net, Path(folder) / "model")
        twin.mkdir(exist_ok=True)
        for file in ("model.xml", "model.bin"):
            shutil.copyfile(Path(folder) / "model" / file, twin / file)
    (twin / "key.txt").write_text(int8.key(net) + "\n")
    return twin / "model.xml"


if __name__ == "__main__":
    for shipped in sys.argv[1:] or int8.SHIPPED:
        print(ship(shipped))
