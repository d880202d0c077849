"""Export a cached pruned model in the published code's checkpoint layout.

`python -m sparse_mu.pruning.export <prune artifact dir> <out.pth.tar>`; the artifact is
`<paths.cache_dir>/prune/<key>/`, the key is `artifacts.pruned` in a run's metrics.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sparse_mu.pruning.mask import Mask
from sparse_mu.pruning.published import PUBLISHED_HEAD, export_published


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sparse_mu.pruning.export", description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="a prune artifact directory (model.pt, mask.pt, meta.json)")
    parser.add_argument("out", type=Path, help="the checkpoint to write, e.g. model_SA_best.pth.tar")
    args = parser.parse_args(argv)
    model, mask, meta = (args.artifact / f for f in ("model.pt", "mask.pt", "meta.json"))
    if not (model.is_file() and mask.is_file() and meta.is_file()):
        parser.error(f"{args.artifact} is not a prune artifact (needs model.pt, mask.pt, meta.json)")
    state = torch.load(model, map_location="cpu", weights_only=True)
    head = json.loads(meta.read_text()).get("head", PUBLISHED_HEAD)
    export_published(state, Mask.load(mask), args.out, head)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
