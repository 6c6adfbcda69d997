"""Which of the issue's targets a run held, from its numbers alone: a run's JSON can be
evaluated again (--render) without the rig."""

from __future__ import annotations

from typing import Any

from bench_measure import FAN, LINK_MBIT, PLAIN_OPTION


def is_shipit_run(key: str) -> bool:
    """A run of shipit itself (``…/shipit``, ``…/shipit-wire``), not a baseline pipe."""
    return key.rsplit("/", 1)[-1].startswith("shipit")


def secs(row: dict[str, Any] | None) -> float | None:
    if row and row.get("ok") and row.get("seconds") and row.get("available", True):
        return row["seconds"]
    return None


def ratio(base: float | None, ship: float | None) -> float | None:
    return round(base / ship, 2) if base and ship else None


def evaluate(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each held / not held, from this run's numbers."""
    return [
        *cold_slow(runs),
        *cold_option(runs),
        *cold_loopback(runs),
        *redeploys(runs),
        *fanouts(runs),
        target("shipit peak RSS (MB, any run)", peak_rss(runs), "≤", 256, "max over runs"),
    ]


def target(
    name: str, value: float | None, op: str, limit: float, how: str, bound: float | None = None
) -> dict[str, Any]:
    """``value`` against ``limit``; ``bound``: the value if shipit ran at the floor."""
    held = None if value is None else (value >= limit if op == "≥" else value <= limit)
    return {
        "target": name,
        "value": value,
        "op": op,
        "limit": limit,
        "how": how,
        "held": held,
        "bound": None if bound is None else round(bound, 2),
    }


def at_floor(runs: dict[str, dict[str, Any]], key: str) -> float | None:
    """The fastest a run could be: the source's first byte, then its bytes at link rate."""
    first = runs.get("floor/save-first-byte/v1", {}).get("first_byte_seconds")
    wire = link_floor(runs.get(key) or {})
    return first + wire if first and wire else None


def cold_slow(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Cold over the shaped link, into d26c and d20: faster than the gzip and zstd pipes."""
    out = []
    for t in ("d26c", "d20"):
        ship = secs(runs.get(f"cold/slow/{t}/shipit"))
        for how, lim in (("gzip", 2.5), ("zstd", 1.1)):
            pipe = secs(runs.get(f"cold/slow/{t}/{how}"))
            out.append(
                target(
                    f"100 Mbit/s cold → {t}: faster than the {how} pipe",
                    ratio(pipe, ship),
                    "≥",
                    lim,
                    f"{how} pipe s ÷ shipit s",
                    ratio(pipe, at_floor(runs, f"cold/slow/{t}/shipit")),
                )
            )
    return out


def cold_option(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Cold over the shaped link with `--wire zstd`, where the store keeps plain layers."""
    out = []
    for t in PLAIN_OPTION:
        pipe, key = secs(runs.get(f"cold/slow/{t}/zstd")), f"cold/slow/{t}/shipit-wire"
        if key in runs:
            out.append(
                target(
                    f"(option) 100 Mbit/s cold → {t} with `--wire zstd` (plain layers kept): "
                    "faster than the zstd pipe",
                    ratio(pipe, secs(runs.get(key))),
                    "≥",
                    1.1,
                    "zstd pipe s ÷ shipit --wire zstd s",
                    ratio(pipe, at_floor(runs, key)),
                )
            )
    return out


def cold_loopback(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Cold on loopback: close to `docker save | docker load`."""
    out = []
    for t in ("d26c", "d20"):
        plain, ship = secs(runs.get(f"cold/lo/{t}/plain")), secs(runs.get(f"cold/lo/{t}/shipit"))
        out.append(
            target(
                f"loopback cold → {t}: vs docker save | docker load",
                round(ship / plain, 2) if plain and ship else None,
                "≤",
                1.15,
                "shipit s ÷ plain pipe s",
            )
        )
    return out


def redeploys(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Redeploy: close to the source's own save of v2; over the shaped link, faster than gzip."""
    out = []
    save = secs(runs.get("floor/save-null/v2"))
    for link in ("lo", "slow"):
        for t in ("d26c", "d20"):
            ship = secs(runs.get(f"redeploy/{link}/{t}/shipit"))
            out.append(
                target(
                    f"redeploy ({link}) → {t}: vs source's docker save > /dev/null",
                    round(ship / save, 2) if save and ship else None,
                    "≤",
                    1.3,
                    "shipit v2 s ÷ docker save bench:v2 > /dev/null s",
                )
            )
    for t in ("d26c", "d20"):
        gzip = secs(runs.get(f"redeploy/slow/{t}/gzip"))
        out.append(
            target(
                f"redeploy (100 Mbit/s) → {t}: faster than the gzip pipe",
                ratio(gzip, secs(runs.get(f"redeploy/slow/{t}/shipit"))),
                "≥",
                10,
                "gzip pipe s ÷ shipit s",
                ratio(gzip, save),  # shipit cannot beat the source's own save of v2
            )
        )
    return out


def fanouts(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Fan-out to three targets: close to the slowest single-target ship."""
    out = []
    for link in ("lo", "slow"):
        fan = secs(runs.get(f"fanout/{link}/shipit"))
        singles = [secs(runs.get(f"cold/{link}/{t}/shipit")) for t in FAN]
        one = max(singles) if all(singles) else None
        floor = at_floor(runs, f"fanout/{link}/shipit") if link == "slow" else None
        out.append(
            target(
                f"fan-out to three ({link}) vs one target",
                round(fan / one, 2) if fan and one else None,
                "≤",
                1.5,
                "fan-out s ÷ slowest single-target shipit s",
                floor / one if floor and one else None,
            )
        )
    return out


def peak_rss(runs: dict[str, dict[str, Any]]) -> float | None:
    rss = [r["peak_rss_mb"] for r in runs.values() if "peak_rss_mb" in r]
    return max(rss) if rss else None


def link_floor(row: dict[str, Any]) -> float | None:
    b = row.get("wire_tx_bytes")
    return b * 8 / (LINK_MBIT * 1e6) if b else None
