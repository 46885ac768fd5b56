"""``vitsearch doctor``: a pass/fail table of what this machine can time and run.

Light at import (argparse only); the checks live in :mod:`vitsearch.evaluators.doctor`.
Exit code 0 only when every check the device should pass does (1 otherwise; 2 for bad
input such as an absent device). Below the checks, the installed dependencies against
the versions the suite was tested on (a difference is reported, not failed).
"""

from __future__ import annotations

import json

from vitsearch.search import versions


def register(sub) -> None:
    """Add ``doctor`` to the `vitsearch` parser."""
    p = sub.add_parser("doctor", help="check timing, fingerprint, runtimes and kernels on this machine")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--quick", action="store_true", help="skip building with torch.compile (slow to compile)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> int:
    """Run every check on ``--device`` and print the table (or JSON); 0 when nothing failed."""
    from vitsearch.evaluators.doctor import diagnose, exit_code, render

    fingerprint, checks = diagnose(args.device, quick=args.quick)
    code = exit_code(checks)
    rows = versions.compare(versions.tested_versions())
    if args.json:
        print(json.dumps({"fingerprint": fingerprint, "checks": [c.to_dict() for c in checks],
                          "versions": [r.to_dict() for r in rows], "exit_code": code}, indent=2, default=str))
    else:
        print(render(fingerprint, checks))
        print("\n" + versions.render(rows))
    return code
