"""``python -m tinymodels [--formats bf16 fp8] [--force] [--json]``: build (or find) the tiny models."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import FORMATS, build
from .cache import DEFAULT_FORMATS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinymodels", description=__doc__)
    parser.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS), choices=sorted(FORMATS))
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--json", action="store_true", help="print {format: path, seconds} as JSON")
    args = parser.parse_args(argv)

    def progress(frac: float, msg: str) -> None:
        if not args.json:
            print(f"[{frac:5.1%}] {msg}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    paths = build(tuple(args.formats), force=args.force, progress=progress)
    seconds = round(time.monotonic() - t0, 2)
    if args.json:
        print(json.dumps({"paths": {k: str(v) for k, v in paths.items()}, "seconds": seconds}))
    else:
        for name, path in paths.items():
            print(f"{name}\t{path}")
        print(f"done in {seconds} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
