"""``vitsearch doctor``: can this machine time, fingerprint and run what vitsearch would search over?

Every check *runs* the thing (a timed pass, a kernel on real tensors compared with an
fp32 reference, a runtime building and running the built-in model) and ends in one of:

* ``pass``;
* ``fail``: broken where it should work (an exception, or outputs off the reference) —
  the exit code is 1 when any check fails;
* ``not available``: this device has no kernel / hardware for it, as the knob x runtime
  table (:mod:`vitsearch.evaluators.runtimes.support`) expects (2:4 sparse kernels on a
  CPU, TensorRT without CUDA); a distinct outcome, not a failure;
* ``not installed``: an optional package is missing (the detail gives the install line).

What the device *should* pass comes from the same table, so a CUDA kernel that raises
on a GPU is a failure while the same kernel refused on a CPU is "not available". The
CUDA checks were written with care but not exercised (no GPU on the development
machine): ``vitsearch doctor --device cuda`` on a GPU is their first run.
"""

from __future__ import annotations

from typing import Any

from vitsearch.evaluators.doctor_checks import FAIL, MISSING, PASS, UNAVAILABLE, Check

def exit_code(checks: list[Check]) -> int:
    """0 when no check failed, else 1."""
    return 1 if any(c.status == FAIL for c in checks) else 0


def diagnose(device: str = "cpu", quick: bool = False) -> tuple[dict[str, Any], list[Check]]:
    """Run every check on ``device``; (fingerprint, checks). ``quick`` skips torch.compile (slow to compile)."""
    from vitsearch.evaluators.doctor_checks import kernel_checks, runtime_checks, timing_checks
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint, resolve_device

    dev = resolve_device(device)
    checks = timing_checks(dev) + kernel_checks(dev) + runtime_checks(dev, quick)
    return device_fingerprint(dev), checks


def render(fingerprint: dict[str, Any], checks: list[Check]) -> str:
    """The pass/fail table as text, with the device line and a verdict."""
    where = fingerprint.get("gpu_name") or fingerprint.get("cpu_model")
    extra = f", CPU capability {fingerprint.get('cpu_capability')}" if fingerprint.get("kind") == "cpu" else ""
    lines = [f"vitsearch doctor: {fingerprint.get('device')} [{where}{extra}], fingerprint "
             f"{fingerprint.get('fingerprint_id')}", ""]
    width = max(len(f"{c.group}: {c.name}") for c in checks)
    for c in checks:
        lines.append(f"{f'{c.group}: {c.name}':<{width}}  {c.status:<13}  {c.detail}")
    failed = [c for c in checks if c.status == FAIL]
    lines += ["", f"{len(checks)} checks: {sum(c.status == PASS for c in checks)} pass, {len(failed)} fail, "
                  f"{sum(c.status == UNAVAILABLE for c in checks)} not available on this device, "
                  f"{sum(c.status == MISSING for c in checks)} not installed"]
    return "\n".join(lines)
