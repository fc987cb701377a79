"""The soak of ``make soak``, short: 100 stock y-websocket clients over 10 documents for ~15 s.

Steady edits with unique tokens, awareness churn, clients leaving and joining,
documents going idle and unloading (``--idle-timeout 1``). Fails if a token is
lost, doubled or unknown, if RSS, fds, tasks, event-loop handles or awareness
states grow after warm-up beyond ``SoakOptions``' tolerances, or if the server
does not drain (no connection, no document loaded, as few fds, tasks and timers
as before any client came) once every client left.
"""

from __future__ import annotations

import pytest

from tests.jsclient import require_node
from tests.swarm import SoakOptions, run_soak


@pytest.mark.timeout(seconds=120)
async def test_a_short_soak_loses_no_token_and_grows_nothing(tmp_path):
    require_node()
    opts = SoakOptions(
        conns=100, docs=10, duration=15, warmup=5, sample=1, edit_every=4, awareness_every=2,
        churn_every=0.5, churn_count=2, idle_every=2, idle_for=2.5, idle_timeout=1, pin=False,
    )  # fmt: skip
    lines: list[str] = []
    verdict = await run_soak(opts, tmp_path, say=lines.append)
    report = "\n".join(lines + verdict.lines)
    assert verdict.ok, "\n".join(verdict.failures) + "\n" + report
    assert verdict.tokens["checked"] >= 200, report  # the load really ran
    steady = [s for s in verdict.samples if "phase" not in s]
    assert min(s["docs_loaded"] for s in steady) < opts.docs, "no document ever unloaded"
    assert steady[-1]["joins"] > opts.conns + 20, "no client churn"
    assert max(s["aw_states"] for s in steady) > 0, "no awareness seen"
