"""docs/benchmarks.md (and the benchmarks.json it is written from), section by section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench_evaluate import is_shipit_run, link_floor, ratio, secs
from bench_measure import FAN, GB, LINK_MBIT


def mb(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:,.0f} MB"


def fmt_s(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not run"
    if row.get("available") is False:
        return "not available"
    if not row.get("ok"):
        return "timed out" if str(row.get("error", "")).startswith("timed out") else "failed"
    return f"{row['seconds']:.1f}"


def esc(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "\\|")


def fr(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}×"


def floors_cell(runs: dict[str, dict[str, Any]], key: str) -> str:
    """The floors under a shipit run: the source's save (and its first byte), the
    target's load of the plain archive from a file, the link time of the bytes sent."""
    row = runs[key]
    phase, link, t = key.split("/")[:3]
    ref = "v2" if phase == "redeploy" else "v1"
    parts = []
    if s := secs(runs.get(f"floor/save-null/{ref}")):
        first = runs.get("floor/save-first-byte/v1", {}).get("first_byte_seconds")
        parts.append(f"save {s:.1f}" + (f" (1st byte {first:.1f})" if first else ""))
    if phase != "redeploy" and (s := secs(runs.get(f"floor/load/{t}"))):
        parts.append(f"load {s:.1f}")
    if link == "slow" and (s := link_floor(row)):
        parts.append(f"link {s:.1f}")
    return " · ".join(parts)


def _reports(summary: Any) -> list[dict[str, Any]]:
    """The per-target reports in one shipit ``--json`` summary (one, or a fan-out's)."""
    if not isinstance(summary, dict):
        return []
    if "targets" in summary:
        return [t["report"] for t in summary["targets"] if isinstance(t.get("report"), dict)]
    return [summary]


def choices(runs: dict[str, dict[str, Any]]) -> list[str]:
    """What shipit decided per target: the link it measured, the codec, staged loads."""
    rows = []
    for key, row in runs.items():
        if not is_shipit_run(key) or key.startswith("archive/"):
            continue
        for rep in _reports(row.get("summary")):
            target = (rep.get("target") or {}).get("name", "")
            link = rep.get("link_mb_s")
            rows.append(
                f"| {key} | {target} | {'' if link is None else link} | "
                f"{rep.get('compression', '')} | {rep.get('wire_compression') or ''} | "
                f"{rep.get('stages', 'not reported')} | "
                f"{mb(rep.get('bytes_sent'))} |"
            )
    if not rows:
        return []
    return [
        "## What shipit chose",
        "",
        "Per target, from shipit's `--json` summary: the link it measured over SSH (MB/s; "
        "SSH IGNORE packets for about 0.1 s, at most 2 MiB, 32 KiB on a slow link), the "
        "layer compression that followed from it and the engine, the compression of the "
        "whole upload around plain layers (classic stores, one target, or `--wire`), and "
        "how many stage loads went before the image's own (staged loads are on below "
        "20 MB/s).",
        "",
        "| run | target | link MB/s | layers | upload | stages | bytes sent |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _landed_at(report: dict[str, Any]) -> float:
    """When a target's load had finished, from the start (a fan-out's last is the one
    the command waited for)."""
    p = report["phases"]
    return sum(p.get(k, 0) for k in ("source_preparing", "transfer", "target_after_last_byte"))


def timeline(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Each shipit ship split into the phases its ``--json`` reports (a fan-out: those of
    the target that loaded last)."""
    rows = []
    for key, row in runs.items():
        reports = [r for r in _reports(row.get("summary")) if isinstance(r.get("phases"), dict)]
        if not is_shipit_run(key) or key.startswith("archive/") or not secs(row) or not reports:
            continue
        p = max(reports, key=_landed_at)["phases"]
        after = p.get("target_after_last_byte", 0) + p.get("target_registering_stages", 0)
        if any(rep.get("stages") for rep in reports):
            key += " (staged)"
        rows.append(
            f"| {key} | {row['seconds']:.1f} | {p.get('connect', 0):.1f} | "
            f"{p.get('source_preparing', 0):.1f} | {p.get('transfer', 0):.1f} | {after:.1f} | "
            f"{p.get('verification', 0):.2f} |"
        )
    if not rows:
        return []
    return [
        "## Where shipit's time goes",
        "",
        "The phases each shipit run reports in `--json`, all in seconds: connecting to the "
        "target and asking what it holds; the source's first byte, counted from the start "
        "(the save is asked for while the targets connect, so the two overlap); the "
        "transfer, from that byte to the last byte into the target; the target's work after "
        "it (loading, unpacking; in a staged run the stage loads overlap the transfer, and "
        "this adds the waits for them); and the check of what landed.",
        "",
        "| run | wall | connect | source's first byte | transfer | target after the last "
        "byte | check |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def write_report(out: Path, res: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(res, indent=2) + "\n")
    runs = res["runs"]
    tar = res["image"].get("tar_bytes") or res["image"]["bytes"]
    L: list[str] = ["# Benchmarks", ""]
    L += intro(res)
    L += [
        "No-op and tag-only re-ships, and cold ships and redeploys of an image with one "
        "dominant layer: [benchmarks-floor.md](benchmarks-floor.md) (integration/"
        "bench_floor.py). Into a containerd node: [benchmarks-nodes.md](benchmarks-nodes.md).",
        "",
    ]
    L += targets_table(res["targets"])
    L += floors_table(runs, tar)
    L += archive_table(runs, tar)
    L += ship_table(
        runs,
        "cold",
        "Cold ship: bench:v1 into an empty target",
        "Source d26 by socket. Pipes run `docker load` over `ssh` (loopback `plain` loads "
        "straight into the target's socket). Bytes: see above.",
    )
    L += ship_table(
        runs,
        "redeploy",
        "Redeploy: bench:v2 onto a target holding bench:v1",
        "The pipes send the whole image again; shipit sends what its build sends (see "
        "its summary below).",
    )
    L += redeploy_summaries(runs)
    L += fanout_table(runs)
    L += choices(runs)
    L += timeline(runs)
    L += notes(res)
    (out / "benchmarks.md").write_text("\n".join(L))


def intro(res: dict[str, Any]) -> list[str]:
    """The run, the machine, the engines, the image and the links; what the words mean."""
    m, img = res["machine"], res["image"]
    return [
        f"Generated by `{res['command']}` on {res['generated']} "
        f"({'quick run' if res['quick'] else 'full run'}, {res['wall_minutes']} min). "
        "One run of each command: the machine is shared, so treat single numbers as ±10–20 %.",
        "",
        f"- Machine: {m['cores']} cores, {m['cpu']}, {m['memory_gb']} GiB RAM, kernel "
        f"{m['kernel']}, {m['os']}; load average {res['loadavg'][0]} at start, "
        f"{res['loadavg'][1]} at the end.",
        f"- Engines (rig): d20 = {m['engines']['d20']} classic, d26 = {m['engines']['d26']} "
        f"classic (the source, by socket), d26c = {m['engines']['d26c']} containerd store, "
        "d26x = the bench's own 26.1 classic engine (same binaries as d26; third fan-out "
        "target and the 26-classic load floor).",
        f"- shipit at commit {m['shipit_commit']}"
        + (" (shipit/ has uncommitted changes)" if m["shipit_tree_dirty"] else "")
        + f", Python {m['python']}.",
        f"- Image `bench:v1`: {img['bytes'] / GB:.2f} GB in {len(img['layers'])} layers of this "
        f"machine's files ({'; '.join(img['layers'])}); `bench:v2` differs only in the 1 MiB "
        f"app layer. `docker save` tar: {mb(img.get('tar_bytes'))}.",
        "- Links: **lo** = the rig's sshd on 127.0.0.1; **slow** = a copy of that sshd in "
        "network namespace `shipit-bench`, reached over a veth pair (10.200.0.1/30 ↔ "
        f"10.200.0.2/30) shaped with `tbf rate {LINK_MBIT}mbit` each way, no added latency "
        f"(50 MiB through it took {res.get('link_check_seconds', '?')} s; 4.2 s is the "
        "ideal). Bytes on the wire: the veth's tx_bytes (payload + SSH + TCP/IP) on the "
        "shaped link; on loopback the byte count of the pipe or shipit's `bytes_sent`.",
        "- Cold = target without the image (`docker rmi`, `docker image prune -f`, and on "
        "the containerd store every blob of the image gone from the content store). "
        "Redeploy = v2 onto a target that has v1 as shipit put it there.",
        "- Speed-up = baseline seconds ÷ shipit seconds (> 1: shipit is faster).",
        "",
    ]


def targets_table(targets: list[dict[str, Any]]) -> list[str]:
    """The issue's targets as evaluate() found them: held, not held, not measured."""
    L = [
        "## Targets",
        "",
        "*At the floor*: the same ratio if shipit took only what it cannot avoid — the "
        "source's first byte plus its bytes at the link's rate (100 Mbit/s), or the source's "
        "own `docker save` of v2 for a redeploy. Where that misses the limit too, the "
        "target cannot be held on this machine whatever shipit does.",
        "",
        "| target | measured | limit | held | at the floor |",
        "|---|---|---|---|---|",
    ]
    for g in targets:
        v = "—" if g["value"] is None else f"{g['value']}"
        held = {True: "**held**", False: "**not held**", None: "not measured"}[g["held"]]
        bound = g.get("bound")
        L.append(
            f"| {esc(g['target'])} ({g['how']}) | {v} | {g['op']} {g['limit']} | {held} | "
            f"{'' if bound is None else bound} |"
        )
    L.append("")
    return L


def floors_table(runs: dict[str, dict[str, Any]], tar: int) -> list[str]:
    """The engines alone: the source's saves, its first byte, each store's load."""
    L = [
        "## Floors: what the engines cost alone",
        "",
        "| what | seconds | MB/s of tar |",
        "|---|---|---|",
    ]
    for key, row in runs.items():
        if key.startswith("floor/"):
            s = secs(row)
            if "first_byte_seconds" in row:
                L.append(
                    f"| `{esc(row['title'])}` | {row['first_byte_seconds']:.1f} "
                    f"(of {fmt_s(row)} for the whole save) | |"
                )
                continue
            L.append(
                f"| `{esc(row['title'])}` | {fmt_s(row)} | {tar / s / 1e6:.0f} |"
                if s
                else f"| `{esc(row['title'])}` | {fmt_s(row)} | |"
            )
    L.append("")
    return L


def archive_table(runs: dict[str, dict[str, Any]], tar: int) -> list[str]:
    """`shipit save` against compressing `docker save` into a file."""
    if not any(k.startswith("archive/") for k in runs):
        return []
    L = [
        "## Archive (`shipit save` vs compressing `docker save`)",
        "",
        "| how | seconds | size | size ÷ tar | shipit save speed-up | peak RSS | CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    ship = secs(runs.get("archive/shipit"))
    for key, row in runs.items():
        if not key.startswith("archive/"):
            continue
        size = row.get("archive_bytes")
        rel = f"{size / tar:.3f}" if size else ""
        sp = "" if "shipit" in key else fr(ratio(secs(row), ship))
        L.append(
            f"| `{esc(row['title'])}` | {fmt_s(row)} | {mb(size)} | {rel} | {sp} | "
            f"{row.get('peak_rss_mb', '')} | {row.get('cpu_seconds', '')} |"
        )
    L.append("")
    return L


def ship_table(runs: dict[str, dict[str, Any]], phase: str, heading: str, blurb: str) -> list[str]:
    """The runs of a phase (cold, redeploy), per link and target, against its shipit run."""
    keys = [k for k in runs if k.startswith(phase + "/")]
    if not keys:
        return []
    L = [f"## {heading}", "", blurb, ""]
    L.append(
        "| link | target | how | seconds | bytes on the wire | shipit speed-up "
        "| peak RSS MB | CPU s | floors s (see above) |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[str]] = {}
    for k in keys:
        _, link, t, _how = k.split("/")
        groups.setdefault((link, t), []).append(k)
    for (link, t), ks in groups.items():
        ship = secs(runs.get(f"{phase}/{link}/{t}/shipit"))
        L += [ship_row(runs, k, link, t, ship) for k in ks]
    L.append("")
    return L


def ship_row(runs: dict[str, dict[str, Any]], k: str, link: str, t: str, ship: float | None) -> str:
    """One run in a ship table: its speed-up over ``ship`` or, for shipit, its floors."""
    row = runs[k]
    b = row.get("wire_tx_bytes") if link == "slow" else row.get("pipe_bytes")
    how = row["title"].rsplit(" → ", 1)[0]
    is_ship = is_shipit_run(k)
    return (
        f"| {link} | {t} | `{esc(how)}` | {fmt_s(row)} | {mb(b)} | "
        f"{'' if is_ship else fr(ratio(secs(row), ship))} | "
        f"{row.get('peak_rss_mb', '')} | {row.get('cpu_seconds', '')} | "
        f"{floors_cell(runs, k) if is_ship else ''} |"
    )


def redeploy_summaries(runs: dict[str, dict[str, Any]]) -> list[str]:
    """What shipit's --json said it sent and skipped in each redeploy."""
    red = {k: v for k, v in runs.items() if k.startswith("redeploy/") and k.endswith("/shipit")}
    if not red:
        return []
    L = [
        "shipit's `--json` summary for the redeploys:",
        "",
        "| link | target | bytes_sent | layers_sent | layers_skipped | bytes_saved |",
        "|---|---|---|---|---|---|",
    ]
    for k, row in red.items():
        s = row.get("summary") if isinstance(row.get("summary"), dict) else {}
        _, link, t, _ = k.split("/")
        L.append(
            f"| {link} | {t} | {mb(s.get('bytes_sent'))} | {s.get('layers_sent', '')} | "
            f"{s.get('layers_skipped', 'not reported')} | "
            f"{mb(s['bytes_saved']) if 'bytes_saved' in s else 'not reported'} |"
        )
    L.append("")
    return L


def fanout_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The fan-out per link against three gzip pipes in sequence and one target."""
    fan = [k for k in runs if k.startswith("fanout/")]
    if not fan:
        return []
    L = [
        "## Fan-out: bench:v1 to d26c, d20 and d26x",
        "",
        "| link | how | seconds | bytes on the wire | peak RSS MB | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    after: list[str] = []  # sentences under the table, not inside it
    for k in fan:
        rows, sentences = fanout_rows(runs, k)
        L += rows
        after += sentences
    L += ["", *after]
    if "fanout/slow/shipit" in runs:
        L.append(
            "- On the shaped link the three targets share one 100 Mbit/s link (one "
            "namespace), so a fan-out must carry three images' bytes through it."
        )
    L.append("")
    return L


def fanout_rows(runs: dict[str, dict[str, Any]], k: str) -> tuple[list[str], list[str]]:
    """A fan-out's rows in the table and its sentence under it."""
    row = runs[k]
    link = k.split("/")[1]
    b = row.get("wire_tx_bytes") if link == "slow" else row.get("pipe_bytes")
    L = [
        f"| {link} | `{esc(row['title'])}` | {fmt_s(row)} | {mb(b)} | "
        f"{row.get('peak_rss_mb', '')} | {row.get('cpu_seconds', '')} |"
    ]
    gz = [secs(runs.get(f"cold/{link}/{t}/gzip")) for t in FAN]
    sg = [secs(runs.get(f"cold/{link}/{t}/shipit")) for t in FAN]
    fs = secs(row)
    L.append(
        f"| {link} | three gzip pipes in sequence (sum of the single runs) | {sum(gz):.1f} | | | |"
        if all(gz)
        else f"| {link} | three gzip pipes in sequence | not measured | | | |"
    )
    if all(sg):
        L.append(
            f"| {link} | single-target shipit, slowest of d26c/d20/d26x | {max(sg):.1f} | | | |"
        )
    after = []
    if row.get("available") is False:
        after.append(f"- {link}: not available — {row['why_not']}.")
    elif fs and all(gz):
        after.append(
            f"- {link}: fan-out speed-up vs three gzip pipes {sum(gz) / fs:.2f}×"
            + (f"; fan-out ÷ slowest single {fs / max(sg):.2f}." if all(sg) else ".")
        )
    return L, after


def notes(res: dict[str, Any]) -> list[str]:
    if not res.get("notes"):
        return []
    return ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
