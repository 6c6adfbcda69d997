#!/usr/bin/env python3
"""The benchmark as one picture: wall time of shipit against the pipes people type, for
cold ships and redeploys, from the committed benchmark results (`make bench` runs it last).

    python integration/bench_chart.py [--docs docs]

Reads docs/benchmarks.json (integration/bench.py) and, when present,
docs/benchmarks-nodes.json (integration/bench_nodes.py); writes docs/benchmarks.svg.
A run that failed is marked "failed" in its group and named under the chart, never drawn
as zero.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

ROOT = Path(__file__).resolve().parents[1]

#: (method label, colour); the same method keeps its colour in every group.
METHODS = {
    "gzip": ("docker save | gzip | ssh … docker load", "#b0b0b0"),
    "zstd": ("docker save | zstd -T0 | ssh … docker load", "#7a7a7a"),
    "ctr": ("docker save | ssh node ctr images import -", "#a98bc4"),
    "shipit": ("shipit", "#1f77b4"),
}
LINKS = {"lo": "loopback", "slow": "100 Mbit/s"}
ENGINES = {"d26c": "Docker 26, containerd store", "d20": "Docker 20.10, classic store"}


def seconds(row: dict[str, Any] | None) -> float | None:
    if row and row.get("ok") and row.get("seconds"):
        return float(row["seconds"])
    return None


Group = tuple[str, dict[str, float | None]]


def groups(docs: Path, case: str) -> list[Group]:
    """One group per (link, target) of ``case``: the seconds of each method run there
    (None: it ran and failed; a method the bench does not run there is absent)."""
    out: list[Group] = []
    runs = json.loads((docs / "benchmarks.json").read_text())["runs"]
    nodes_file = docs / "benchmarks-nodes.json"
    nodes = json.loads(nodes_file.read_text()) if nodes_file.exists() else None
    for link, link_label in LINKS.items():
        for engine, engine_label in ENGINES.items():
            key = f"{case}/{link}/{engine}"
            got = {
                m: runs[f"{key}/{m}"] for m in ("gzip", "zstd", "shipit") if f"{key}/{m}" in runs
            }
            if got:
                out.append(
                    (f"{link_label} → {engine_label}", {m: seconds(r) for m, r in got.items()})
                )
        if nodes and link in nodes["links"]:
            r = nodes["runs"]
            out.append(
                (
                    f"{link_label} → containerd {nodes['node_version']} node",
                    {
                        "ctr": seconds(r.get(f"{case}/{link}/pipe")),
                        "shipit": seconds(r.get(f"{case}/{link}/shipit")),
                    },
                )
            )
    return out


def panel(ax: Any, title: str, data: list[Group]) -> list[str]:
    """Horizontal bars, one group per target; returns what failed."""
    y = 0.0
    ticks, labels, failed = [], [], []
    for label, by_method in reversed(data):
        start = y
        for method, secs in reversed(list(by_method.items())):
            name, colour = METHODS[method]
            if secs is None:
                failed.append(f"{name} ({title}, {label})")
                ax.text(0, y, " failed", va="center", fontsize=7, color="#c00")
            else:
                ax.barh(y, secs, height=0.8, color=colour, label=name)
                ax.text(secs, y, f" {secs:.0f} s", va="center", fontsize=7)
            y += 1
        ticks.append((start + y - 1) / 2)
        labels.append(label)
        y += 0.7
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("wall time, s (shorter is better)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(x=0.12)
    return failed


def draw(docs: Path) -> Path:
    cases = {"cold": "cold: bench:v1 (2.1 GB, 5 layers)", "redeploy": "redeploy: v2 onto v1"}
    data = {case: groups(docs, case) for case in cases}
    bars = max(sum(len(g) + 0.7 for _, g in d) for d in data.values())
    plt.rcParams["svg.hashsalt"] = "shipit-bench"  # the same results draw the same file
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.26 * bars + 1.5))
    failed = []
    for ax, (case, title) in zip(axes, cases.items(), strict=True):
        failed += panel(ax, title, data[case])
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    names = [n for n, _ in METHODS.values() if n in legend]
    fig.legend([legend[n] for n in names], names, loc="lower center", ncol=len(names), fontsize=8)
    when = [f"Docker engines: {json.loads((docs / 'benchmarks.json').read_text())['generated']}"]
    nodes_file = docs / "benchmarks-nodes.json"
    if nodes_file.exists():
        when.append(f"containerd node: {json.loads(nodes_file.read_text())['generated']}")
    fig.text(0.99, 0.005, "measured " + "; ".join(when), fontsize=6, ha="right")
    if failed:
        fig.text(0.01, 0.005, "failed runs: " + "; ".join(failed), fontsize=6)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = docs / "benchmarks.svg"
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    print(f"wrote {draw(p.parse_args().docs)}")


if __name__ == "__main__":
    main()
