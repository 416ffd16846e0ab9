"""``python -m tests.reliability``: the reliability campaign (see ``README.md``)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from tests.reliability.campaign import PHASES, Settings, run_campaign

RESULTS = Path(__file__).parent / "RESULTS.md"


def main(argv: list[str] | None = None) -> int:
    """Run the campaign, print the figures, write RESULTS.md; exit 0 only if all passed."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability",
        description="Crash, fault-storm, bad-input and security campaign against the Next "
        "Engine sandbox; nothing may be lost or doubled.",
    )
    default = Settings()
    parser.add_argument(
        "--orders",
        type=int,
        default=default.orders,
        help="Next Engine orders (each confirmed by the WMS with tracking)",
    )
    parser.add_argument(
        "--others",
        type=int,
        default=default.others,
        help="shipments not from Next Engine and receipts",
    )
    parser.add_argument(
        "--kills", type=int, default=default.kills, help="SIGKILLs in the crash phase"
    )
    parser.add_argument("--seed", type=int, default=default.seed, help="seed of everything")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma list of {', '.join(PHASES)}"
    )
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="the small version the test suite runs (overrides the sizes)",
    )
    parser.add_argument("--workdir", type=Path, help="work folder (default: a new temp folder)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (logs, databases, WMS files)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where to write the figures (default tests/reliability/RESULTS.md)",
    )
    args = parser.parse_args(argv)
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    if args.bounded:
        settings = dataclasses.replace(Settings.bounded(), phases=phases)
    else:
        settings = Settings(args.orders, args.others, args.kills, args.seed, phases)
    command = shlex.join(
        ["python", "-m", "tests.reliability", *(argv if argv is not None else sys.argv[1:])]
    )
    figures = run_campaign(settings, command, args.workdir, args.keep)
    print(figures.summary())
    args.results.write_text(figures.markdown(), encoding="utf-8")
    print(f"figures written to {args.results}")
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
