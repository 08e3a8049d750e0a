"""Did every job train the model its ``config.json`` describes? For each finished job of a
run folder, rebuild its audio encoder and fusion from ``config.json`` alone (with the input
sizes the job recorded) and compare their classes and trainable parameter counts with what
the job recorded building (``result.json``'s ``model``; see
:mod:`emoplug.train.model_check`). The target: 0 mismatched.

    python benchmarks/model_audit.py RUN_DIR [--out FILE.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", help="JSON path (default benchmarks/results/model_audit.json)")
    args = parser.parse_args()
    _common.offline()
    from emoplug.train.model_check import check_run

    audit = check_run(args.run_dir)
    print(f"{audit['checked']} finished jobs checked, {len(audit['mismatched'])} mismatched")
    for line in audit["mismatched"][:20]:
        print(f"  {line}")
    _common.write_report("model_audit", args.out,
                         run=str(args.run_dir.resolve().relative_to(_common.ROOT))
                         if args.run_dir.resolve().is_relative_to(_common.ROOT)
                         else str(args.run_dir),
                         checked=audit["checked"], mismatched=audit["mismatched"],
                         target_met=not audit["mismatched"])


if __name__ == "__main__":
    main()
