"""A process that races others to gate the same registered models (tests/test_services.py)."""

from __future__ import annotations

import traceback


def gate_in_turn(barrier, tracking_uri, trained, data, names, results) -> None:
    """For each name: wait for every racer, then register `trained` and run the gate."""
    from lite_rec.registry import register_and_gate
    from lite_rec.tracking import Tracking

    tracking = Tracking(tracking_uri)
    for name in names:
        barrier.wait(timeout=300)
        try:
            decision = register_and_gate(trained, data, name, tracking)
            results.put((name, trained.run_id, decision.version, decision.promoted, None))
        except Exception:  # reported to the test, which fails on it
            results.put((name, trained.run_id, None, None, traceback.format_exc()))
