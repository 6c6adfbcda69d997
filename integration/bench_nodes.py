#!/usr/bin/env python3
"""Into a containerd node without Docker, over SSH: shipit against what people type today,
`docker save IMAGE | ssh node 'ctr -n k8s.io images import -'` (`make bench` runs it).

The same images and source as integration/bench.py (``bench:v1``, 2.1 GB in 5 layers, and
``bench:v2``, which differs in its 1 MiB app layer, on the rig's d26 by socket), into the
rig's node c21 (containerd 2.1, integration/nodes.sh):

  cold      bench:v1 into a node without it (its images removed with --sync: no blob
            of the image is left in the content store)
  redeploy  bench:v2 onto the node that has v1, put there by the same method

on loopback (the node's own sshd, alias node-c21) and at 100 Mbit/s (a copy of that
sshd behind the shaped veth of integration/netns.sh, alias slow-c21). Each landing is
checked: the node lists docker.io/library/bench:vN. Bytes: the veth's tx_bytes on the
shaped link, the pipe's or shipit's own count on loopback.

Writes docs/benchmarks-nodes.md and docs/benchmarks-nodes.json (or --out DIR);
--render JSON rewrites the Markdown only. Needs root and the rig with its nodes up.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Shared with the main bench: the measurement and the rig (as `bench`), the images, the
# report's helpers, and bench.py's lock and signals.
import bench_measure as bench  # noqa: E402
from bench import Interrupted, lock, on_signal  # noqa: E402
from bench_evaluate import secs  # noqa: E402
from bench_images import build_images  # noqa: E402
from bench_report import fmt_s  # noqa: E402

NODES = bench.RIG / "nodes"
NODE = "c21"
NAMESPACE = "k8s.io"
ALIASES = {"lo": "node-c21", "slow": "slow-c21"}
METHODS = ("pipe", "shipit")
CASES = (("cold", "bench:v1"), ("redeploy", "bench:v2"))


def ssh_config(link: str) -> Path:
    return NODES / "ssh" / "config" if link == "lo" else bench.SSH_CONFIG


def on_node(command: str, link: str = "lo") -> str:
    done = subprocess.run(
        ["ssh", "-F", str(ssh_config(link)), ALIASES[link], command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout


def images() -> list[str]:
    return on_node(f"ctr -n {NAMESPACE} images ls -q").split()


def clear() -> None:
    """No bench image on the node, and (--sync) the content store collected at once."""
    refs = [r for r in images() if "bench:" in r]
    if refs:
        on_node(f"ctr -n {NAMESPACE} images rm --sync {' '.join(refs)}")
    left = on_node(f"ctr -n {NAMESPACE} content ls -q").split()
    bench.log(f"    node {NODE}: cleared ({len(left)} blobs left in its content store)")


def landed(ref: str) -> bool:
    return f"docker.io/library/{ref}" in images()


def command(method: str, link: str, ref: str) -> str:
    sock = bench.sock(bench.SOURCE)
    cfg, alias = ssh_config(link), ALIASES[link]
    if method == "pipe":
        return (
            f"docker -H {sock} save {ref} | {{COUNT}} | "
            f"ssh -F {cfg} {alias} 'ctr -n {NAMESPACE} images import -'"
        )
    return " ".join(
        [*bench.SHIPIT, "ship", ref, "--from", sock, "--to", alias]
        + ["--ssh-config", str(cfg), "--json"]
    )


def run(method: str, link: str, case: str, ref: str) -> dict[str, Any]:
    bench.log(f"  {case} {link} {method}: {ref} into node {NODE}")
    timeout = bench.TIMEOUT[link]
    for attempt in (1, 2):
        row = bench.measure(
            command(method, link, ref), link=link, timeout=timeout, shipit=method == "shipit"
        )
        if row["ok"] and not landed(ref):
            row.update(ok=False, error=f"docker.io/library/{ref} is not listed on the node")
        if row["ok"] or attempt == 2:
            return row
        bench.log(f"    failed ({row.get('error')}); once more")
        if case == "cold":
            clear()
    return row


def measure_all(links: list[str]) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    bench.log("  floor: the source's own docker save bench:v2 > /dev/null")
    sock = bench.sock(bench.SOURCE)
    runs["floor/save/v2"] = bench.measure(
        f"docker -H {sock} save bench:v2 > /dev/null", link="lo", timeout=bench.TIMEOUT["lo"]
    )
    for link in links:
        for method in METHODS:
            clear()
            for case, ref in CASES:
                runs[f"{case}/{link}/{method}"] = run(method, link, case, ref)
    clear()
    return runs


def moved(row: dict[str, Any] | None) -> str:
    n = (row or {}).get("wire_tx_bytes") or (row or {}).get("pipe_bytes")
    if n is None:
        return "—"
    return f"{n / 1e6:,.0f} MB" if n >= 10e6 else f"{n / 1e3:,.0f} kB"


def render(res: dict[str, Any]) -> str:
    runs = res["runs"]
    out = [
        "# Benchmarks: a containerd node without Docker",
        "",
        f"Generated by `{res['command']}` on {res['generated']} ({res['wall_minutes']} min). "
        "One run of each command: treat single numbers as ±10–20 %.",
        "",
        f"- Machine: {res['machine']}.",
        f"- Source: the rig's d26 (Docker {res['source_version']}) by socket. Target: node "
        f"{NODE}, containerd {res['node_version']} with no Docker, over SSH, namespace "
        f"`{NAMESPACE}`, images unpacked for overlayfs by both methods.",
        "- Image `bench:v1`: 2.1 GB in 5 layers; `bench:v2` differs only in its 1 MiB "
        "app layer (the images of [benchmarks.md](benchmarks.md)).",
        "- Links: **lo** = the node's sshd on 127.0.0.1; **100 Mbit/s** = a copy of it "
        "behind a veth pair shaped with `tbf rate 100mbit` each way. Bytes: the veth's "
        "tx_bytes on the shaped link; on loopback the pipe's byte count or shipit's "
        "`bytes_sent`.",
        "- Cold = the node without the image (`ctr images rm --sync`: no blob of it is "
        "left). Redeploy = v2 onto the node that has v1, put there by the same method.",
        "",
        f"The source's own `docker save bench:v2 > /dev/null` took "
        f"{fmt_s(runs.get('floor/save/v2'))} s in this run: no redeploy from it can "
        "take less (the source engine exports every layer before its first byte).",
        "",
        "| case | link | `docker save \\| ssh node 'ctr -n k8s.io images import -'` "
        "| shipit | speed-up | bytes (pipe → shipit) |",
        "|---|---|---|---|---|---|",
    ]
    for case, _ in CASES:
        for link in res["links"]:
            pipe = runs.get(f"{case}/{link}/pipe")
            ship = runs.get(f"{case}/{link}/shipit")
            p, s = secs(pipe), secs(ship)
            speed = f"{p / s:.2f}×" if p and s else "—"
            label = "100 Mbit/s" if link == "slow" else "loopback"
            out.append(
                f"| {case} | {label} | {fmt_s(pipe)} | {fmt_s(ship)} | {speed} "
                f"| {moved(pipe)} → {moved(ship)} |"
            )
    out += [
        "",
        "Speed-up = pipe seconds ÷ shipit seconds (> 1: shipit is faster). shipit sends "
        "the layers zstd-compressed (containerd 2.1 reads zstd), skips the blobs the "
        "node's content store already holds, and checks the landing on the node "
        "(`ctr images check`, then unpacks); the pipe sends the whole plain tar every time.",
        "",
    ]
    return "\n".join(out)


def write(out: Path, res: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks-nodes.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "benchmarks-nodes.md").write_text(render(res))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--links", default="lo,slow", help="comma list of lo,slow")
    p.add_argument("--out", type=Path, default=bench.ROOT / "docs", help="where the report goes")
    p.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the Markdown")
    args = p.parse_args()
    if args.render:
        write(args.out, json.loads(args.render.read_text()))
        return 0
    links = [x for x in args.links.split(",") if x]
    nodes = json.loads((NODES / "nodes.json").read_text())["nodes"]
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    started = time.monotonic()
    with lock():
        try:
            build_images(bench.SOURCE)
            subprocess.run(["bash", str(bench.NETNS_SH), "up"], check=True, env=bench.ENV)
            if "slow" in links and "slow-c21" not in bench.SSH_CONFIG.read_text():
                raise SystemExit("bench: netns.sh found no node c21 to put behind the link")
            runs = measure_all(links)
            # A run of some links keeps the other links' results of the last report.
            previous = args.out / "benchmarks-nodes.json"
            if previous.exists():
                kept = json.loads(previous.read_text())
                for key, row in kept["runs"].items():
                    if key.split("/")[1] not in links:
                        runs.setdefault(key, row)
                links = [x for x in ("lo", "slow") if x in links or x in kept["links"]]
            machine = bench.machine()
            res = {
                "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "command": "python integration/bench_nodes.py " + " ".join(sys.argv[1:]),
                "wall_minutes": round((time.monotonic() - started) / 60, 1),
                "machine": f"{machine['cores']} cores, {machine['os']}; shipit at "
                f"{machine['shipit_commit']}",
                "source_version": bench.rig()["engines"][bench.SOURCE]["server_version"],
                "node_version": nodes[NODE]["version"],
                "links": links,
                "runs": runs,
            }
            write(args.out, res)
            bench.log(f"wrote {args.out}/benchmarks-nodes.md and benchmarks-nodes.json")
            return 0 if all(r["ok"] for r in runs.values()) else 1
        except (KeyboardInterrupt, Interrupted) as exc:
            bench.log(f"bench: interrupted ({str(exc) or 'SIGINT'})")
            return 130
        finally:
            for proc in list(bench.CURRENT):
                bench.kill_group(proc)
            subprocess.run(["bash", str(bench.NETNS_SH), "down"], check=False, env=bench.ENV)
            try:
                clear()
            except Exception as exc:  # the report stands; say what was left
                bench.log(f"bench: could not clear node {NODE}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
