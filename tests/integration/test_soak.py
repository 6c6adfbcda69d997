"""The short soak (`make soak` runs 50 rounds): five redeploys in a row of an image whose
top layer changes every time, over SSH into a classic and a containerd store."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))

import soak  # noqa: E402  (the soak program itself)

ROUNDS = 5
LAYER = 1 << 20


@pytest.mark.parametrize("target", ["d20", "d26c"])
def test_redeploys_in_a_row_stay_small_flat_and_clean(rig, ssh_config, target):
    result = soak.soak(soak.Rig(ssh_config), target, ROUNDS, layer_bytes=LAYER)
    assert [r.error for r in result.rounds if not r.ok] == []
    assert len(result.rounds) == ROUNDS
    for r in result.rounds:
        # the changed layer (random bytes: no compression helps) and a few kB of documents
        assert r.layers_sent == 1
        assert r.bytes_sent is not None and LAYER <= r.bytes_sent <= LAYER + 256_000
    rss = [r.peak_rss_mb for r in result.rounds]
    assert max(rss) - min(rss) < 40, rss
    # what the engine itself keeps: the previous round's image, now dangling (its layer,
    # and on a containerd store both the blob and its snapshot)
    growth = result.summary()["disk_growth_per_round"]
    assert growth <= 3 * LAYER + 1_000_000, growth
    assert result.leftovers == []
