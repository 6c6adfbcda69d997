#!/usr/bin/env python3
"""How close shipit comes to the floor the engines set (`make bench` runs it).

The same rig and source as integration/bench.py (the rig's d26, by socket):

  noop      bench:v1 (2.1 GB) re-shipped into each engine that holds it (d20, d26, d26c,
            d28, d28c, over loopback SSH), and a ship that only adds a name (a second tag
            on the source, bench:tag-ENGINE-N, for the image the target holds as bench:v1;
            median of 3),
            beside the source's own `docker save bench:v1 > /dev/null`
  cold      bigbase:v1 (~700 MB; its base layer is 99.8 % of it, the usual shape: one
            big base and a small app layer) into an empty d26c and d20 at 100 Mbit/s:
            shipit's defaults, the `save | zstd -T0 | ssh 'zstd -d | docker load'` pipe,
            the by-hand procedure (save, each layer to zstd with the zstd CLI, digests
            rewritten, load) and `skopeo copy docker-daemon: docker-daemon:` (by socket, the
            target's forwarded over the same link; a skopeo Engine 26 answers)
  redeploy  bigbase:v2 (its 1 MiB app layer changed) onto a target holding bigbase:v1,
            on loopback and at 100 Mbit/s, each ship right after a
            `docker save bigbase:v2 > /dev/null` of its own
  redeploy-2g  the same with bench:v2 (2.1 GB, 5 layers) onto bench:v1

A cold floor is the source's first byte, plus the bytes shipit sent at the rate the link
carries through SSH (measured in the same run; the nominal rate is shown beside it), plus
what the target did after the last byte (shipit's own phases); a second floor adds
the target's registering of the stage below that a staged load waits for (for one
dominant layer, its registration: work the pipe's `docker load` does after its last
byte). Each cold shipit run uses an empty cache: a machine that has not shipped the image
before.

Writes docs/benchmarks-floor.md and .json (or --out DIR); --render JSON rewrites the
Markdown only. Needs root, the rig up, and integration/netns.sh (it brings it up).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_measure as bench  # noqa: E402  (measurement, the rig and bench:v1 are shared)
from bench_images import build_images  # noqa: E402
from bench_report import esc  # noqa: E402
from bench_skopeo import forwarded_socket, skopeo_command  # noqa: E402

NOOP_ENGINES = ("d20", "d26", "d26c", "d28", "d28c")
COLD_TARGETS = ("d26c", "d20")
BIG = "bigbase"
LINK_RATE = bench.LINK_MBIT * 1e6 / 8  # bytes/s
BYHAND = Path(__file__).resolve().parent / "byhand_zstd.sh"
RUNS = 3  # no-op re-ships per engine (the median is reported)
#: The redeploy cases: image (its v2 onto its v1) and how many times (each a save, then a ship).
REDEPLOYS = {"redeploy": (BIG, 5), "redeploy-2g": ("bench", 3)}


def rig_ssh() -> str:
    return str(bench.rig()["ssh"]["config"])


def shipit(ref: str, alias: str, config: str, *extra: str) -> str:
    py = shlex.quote(sys.executable)
    src = bench.sock(bench.SOURCE)
    return f"{py} -m shipit {ref} --from {src} --to {alias} --ssh-config {config} -q --json " + (
        " ".join(extra)
    )


def build_bigbase() -> None:
    """bigbase:v1 and :v2 on the source: one layer of this machine's shared libraries,
    then 1 MiB of incompressible app bytes that differ between the two."""
    v1, v2 = bench.inspect(bench.SOURCE, f"{BIG}:v1"), bench.inspect(bench.SOURCE, f"{BIG}:v2")
    if v1 and v2 and v1["RootFS"]["Layers"][0] == v2["RootFS"]["Layers"][0]:
        return
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    libs = f"/usr/lib/{multiarch}"
    ctx = Path(tempfile.mkdtemp(dir=bench.WORK, prefix="bigbase-"))
    try:
        bench.sh(f"cp -al {libs} {ctx}/base 2>/dev/null || cp -a {libs} {ctx}/base")
        (ctx / "app").mkdir()
        (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY base {libs}\nCOPY app /app\n")
        for v in ("v1", "v2"):
            seed = f"shipit-bigbase-{v}".encode()
            (ctx / "app" / "app.bin").write_bytes(hashlib.shake_256(seed).digest(1 << 20))
            cli = bench.docker(bench.SOURCE)
            bench.sh(f"DOCKER_BUILDKIT=0 {cli} build -q -t {BIG}:{v} {ctx}", timeout=600)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    bench.log(f"built {BIG}:v1 and {BIG}:v2 on {bench.SOURCE}")


def clear(engine: str) -> None:
    bench.sh(f"{bench.docker(engine)} rmi -f {BIG}:v1 {BIG}:v2", check=False)
    bench.sh(f"{bench.docker(engine)} image prune -f", check=False)


def noop(runs: dict) -> None:
    src = bench.docker(bench.SOURCE)
    bench.sh(f"{src} save bench:v1 > /dev/null", timeout=600)  # warm: not the disk's first read
    bench.timed(
        "noop/save-null",
        f"docker save bench:v1 > /dev/null ({bench.SOURCE})",
        f"{src} save bench:v1 > /dev/null",
        "local",
        runs,
    )
    config = rig_ssh()
    for engine in NOOP_ENGINES:
        alias = bench.rig()["engines"][engine]["ssh_alias"]
        ship = shipit("bench:v1", alias, config)
        setup = bench.measure(ship, link="lo", timeout=900, shipit=True)  # it holds v1 now
        if not setup["ok"]:
            runs[f"noop/{engine}"] = {**setup, "title": f"setup of {engine}"}
            continue
        rows = [bench.measure(ship, link="lo", timeout=300, shipit=True) for _ in range(RUNS)]
        best = median_row(rows)
        best["title"] = f"shipit bench:v1 --to {alias} (it holds bench:v1)"
        runs[f"noop/{engine}"] = best
        if engine == bench.SOURCE:
            continue  # the source itself: a new name there is on the target already
        # A name the target lacks for an image it holds: a second tag, added on the source,
        # a new one each run (the median of RUNS, like the no-op beside it).
        rows = []
        for run in range(RUNS):
            name = f"bench:tag-{engine}-{run}"
            bench.sh(f"{src} tag bench:v1 {name}")
            try:
                bench.log(f"[tag-only/{engine}] shipit {name} --to {alias}")
                rows.append(
                    bench.measure(shipit(name, alias, config), link="lo", timeout=300, shipit=True)
                )
            finally:
                bench.sh(f"{src} rmi {name}", check=False)  # the tag only: bench:v1 stays
                bench.sh(f"{bench.docker(engine)} rmi {name}", check=False)
        runs[f"tag-only/{engine}"] = {
            **median_row(rows),
            "title": f"shipit bench:tag-{engine}-N --to {alias} (it holds the image as bench:v1)",
        }


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run of ``rows`` (a failed one if any failed), with every run's seconds."""
    failed = [r for r in rows if not r["ok"]]
    best = failed[0] if failed else sorted(rows, key=lambda r: r["seconds"])[len(rows) // 2]
    return {**best, "all_seconds": [r["seconds"] for r in rows]}


def source_floor(case: str, ref: str, runs: dict) -> None:
    """The source's own save of ``ref`` to /dev/null and its first byte, each the median of
    RUNS after a save that warms the disk cache (the first read after a while has taken
    13 s where the others took 2.6)."""
    src = bench.docker(bench.SOURCE)
    bench.sh(f"{src} save {ref} > /dev/null", timeout=600)
    rows = []
    for _ in range(RUNS):
        row = bench.measure(bench.first_byte_command(bench.SOURCE, ref), link="local", timeout=600)
        bench.first_byte(row)
        rows.append(row)
    rows.sort(key=lambda r: r.get("first_byte_seconds") or float("inf"))
    runs[f"{case}/first-byte"] = {
        **rows[len(rows) // 2],
        "title": f"GET /images/get {ref} ({bench.SOURCE}): time to the first byte",
        "all_first_byte_seconds": [r.get("first_byte_seconds") for r in rows],
    }
    save = f"{src} save {ref} > /dev/null"
    rows = [bench.measure(save, link="local", timeout=600) for _ in range(RUNS)]
    title = f"docker save {ref} > /dev/null ({bench.SOURCE})"
    runs[f"{case}/save-null"] = {**median_row(rows), "title": title}


def link_rate(alias: str, runs: dict, key: str) -> None:
    """What the shaped link carries through SSH, in payload bytes per second: random bytes
    to ``cat > /dev/null`` on the far side, 120 MB less 24 MB so that the SSH setup drops
    out. (TCP/IP headers alone keep any stream about 4 % under the nominal rate.)"""
    big, small = bench.WORK / "random-120M", bench.WORK / "random-24M"
    if not big.exists():
        bench.sh(f"head -c 120000000 /dev/urandom > {big}")
        bench.sh(f"head -c 24000000 {big} > {small}")
    cmd = f"ssh -F {bench.SSH_CONFIG} {alias} 'cat > /dev/null' < {{}}"
    rates = []
    for _ in range(2):
        t_small = bench.measure(cmd.format(small), link="slow", timeout=120)
        t_big = bench.measure(cmd.format(big), link="slow", timeout=120)
        if t_small["ok"] and t_big["ok"]:
            rates.append(96e6 / (t_big["seconds"] - t_small["seconds"]))
    runs[key] = {
        "title": f"ssh {alias} 'cat > /dev/null' < 120 MB, less 24 MB",
        "ok": bool(rates),
        "bytes_per_second": max(rates) if rates else None,
        "all_bytes_per_second": rates,
    }


def cold(runs: dict) -> None:
    src = bench.docker(bench.SOURCE)
    source_floor("cold", f"{BIG}:v1", runs)
    cfg = bench.SSH_CONFIG
    skopeo, skopeo_version = skopeo_command()
    for target in COLD_TARGETS:
        slow = f"slow-{target}"
        link_rate(slow, runs, f"cold/{target}/link")
        methods = {
            "pipe": (
                f"docker save | zstd -T0 | ssh {slow} 'zstd -d | docker load'",
                f"{src} save {BIG}:v1 | zstd -T0 -q | ssh -F {cfg} {slow} "
                "'zstd -d -q | docker load'",
                False,
            ),
            "byhand": (
                "by hand: save, layers to zstd (zstd CLI), digests rewritten, load",
                f"bash {BYHAND} '{src}' {BIG}:v1 'ssh -F {cfg} {slow} docker load'",
                False,
            ),
            "shipit": (
                f"shipit {BIG}:v1 --to {slow}",
                f"env SHIPIT_CACHE_DIR=$(mktemp -d) {shipit(f'{BIG}:v1', slow, str(cfg))}",
                True,
            ),
        }
        # The pipe and shipit in turn, RUNS times each: the shared machine moves single
        # runs by seconds; the median of each is compared. The by-hand peer runs once.
        rounds = {method: [] for method in methods}
        order = [*(["pipe", "shipit"] * RUNS), "byhand"]
        for method in order:
            title, cmd, is_shipit = methods[method]
            clear(target)
            bench.log(f"[cold/{target}/{method}] {title}")
            row = bench.measure(cmd, link="slow", timeout=600, shipit=is_shipit)
            row["title"] = title
            rounds[method].append(landed_or_failed(row, target))
        for method, rows in rounds.items():
            runs[f"cold/{target}/{method}"] = median_row(rows)
        # skopeo moves images between engines by their sockets only: the target's is
        # forwarded over SSH, so that it crosses the shaped link too. It runs once.
        clear(target)
        with forwarded_socket(slow, target) as dest:
            row = bench.timed(
                f"cold/{target}/skopeo",
                f"{skopeo_version}: copy docker-daemon: docker-daemon: (by socket: "
                f"{bench.SOURCE}'s, and {target}'s forwarded by ssh -L over {slow})",
                f"{skopeo} copy --src-daemon-host {bench.sock(bench.SOURCE)} "
                f"--dest-daemon-host {dest} docker-daemon:{BIG}:v1 docker-daemon:{BIG}:v1",
                "slow",
                runs,
            )
        landed_or_failed(row, target)


def landed_or_failed(row: dict[str, Any], target: str) -> dict[str, Any]:
    """``row``, failed if its command succeeded but bigbase:v1 is not on ``target``."""
    if row["ok"] and not bench.inspect(target, f"{BIG}:v1"):
        row.update(ok=False, error=f"{BIG}:v1 did not land on {target}")
    return row


def forget_landing(ref: str) -> None:
    """Drop what the cache says of ``ref``'s landings (its compressed layers stay)."""
    from shipit.memo import cache_dir

    image = bench.inspect(bench.SOURCE, ref)
    if image:
        (cache_dir() / "landed" / image["Id"].removeprefix("sha256:")).unlink(missing_ok=True)


def redeploy(runs: dict, case: str) -> None:
    image, times = REDEPLOYS[case]
    source_floor(case, f"{image}:v2", runs)
    cfg = str(bench.SSH_CONFIG)
    save = f"{bench.docker(bench.SOURCE)} save {image}:v2 > /dev/null"
    for target in COLD_TARGETS:
        for link in ("lo", "slow"):
            alias = bench.alias(link, target)
            bench.sh(f"{bench.docker(target)} rmi {image}:v2", check=False)
            if not bench.inspect(target, f"{image}:v1"):
                first = shipit(f"{image}:v1", alias, cfg)
                bench.measure(first, link=link, timeout=900, shipit=True)
            rows, saves = [], []
            for _ in range(times):
                # The source's save right before each ship: the machine's state moves the
                # save itself by a second from one minute to the next.
                saves.append(bench.measure(save, link="local", timeout=600))
                bench.sh(f"{bench.docker(target)} rmi {image}:v2", check=False)
                forget_landing(f"{image}:v2")  # a new version: never landed from here before
                bench.log(f"[{case}/{target}/{link}] shipit {image}:v2 --to {alias}")
                cmd = shipit(f"{image}:v2", alias, cfg)
                rows.append(bench.measure(cmd, link=link, timeout=600, shipit=True))
            runs[f"{case}/{target}/{link}"] = {
                **median_row(rows),
                "title": f"shipit {image}:v2 --to {alias} (it holds v1; median of {times})",
                "paired_save": median_row(saves),
            }


# Report ---------------------------------------------------------------------------------


def _s(row: dict | None) -> float | None:
    return row.get("seconds") if row and row.get("ok") else None


def _fmt(x: float | None, unit: str = " s") -> str:
    return "—" if x is None else f"{x:.2f}{unit}"


def _cell(row: dict | None) -> str:
    if not row:
        return "not run"
    if not row.get("ok"):
        return "failed: …" + esc(str(row.get("error", ""))[-180:])  # the engine's reason
    every = row.get("all_seconds")
    if every and len(every) > 1:
        return f"{_fmt(row['seconds'])} ({', '.join(f'{x:.1f}' for x in every if x)})"
    return _fmt(row["seconds"])


def measured_rate(runs: dict, target: str) -> float | None:
    """The link's rate to ``target`` as ``link_rate`` measured it in this run."""
    return (runs.get(f"cold/{target}/link") or {}).get("bytes_per_second")


def cold_floor(
    runs: dict, target: str, *, stages: bool = False, nominal: bool = False
) -> float | None:
    """First byte + bytes at link rate + the target's work after the last byte; with
    ``stages``, also the target's registering of the stage below, which a staged load
    waits for before the image's own documents (the big layer's registration: the pipe's
    ``docker load`` does the same work after its last byte). The link's rate is what it
    carried through SSH in this run (``link_rate``), or with ``nominal`` (or unmeasured)
    its nominal 100 Mbit/s."""
    first = runs.get("cold/first-byte", {}).get("first_byte_seconds")
    row = runs.get(f"cold/{target}/shipit") or {}
    summary = row.get("summary") if row.get("ok") else None
    if first is None or not isinstance(summary, dict):
        return None
    phases = summary.get("phases") or {}
    after = phases.get("target_after_last_byte", 0.0)
    if stages:
        after += phases.get("target_registering_stages", 0.0)
    measured = measured_rate(runs, target)
    rate = LINK_RATE if nominal or not measured else measured
    return first + summary["bytes_sent"] / rate + after


def render(res: dict[str, Any]) -> str:
    runs = res["runs"]
    out = ["# At the floor", "", f"Measured {res['date']} on {res['machine']}.", ""]
    out += ["Regenerate with `make bench` (or `python integration/bench_floor.py`).", ""]
    save = _s(runs.get("noop/save-null"))
    out += ["## No-op and tag-only re-ships of bench:v1 (2.1 GB), over loopback SSH", ""]
    out += [f"The source's `docker save bench:v1 > /dev/null`: {_fmt(save)}.", ""]
    out += [
        "| engine | no-op (median of 3) | ÷ save | tag-only (median of 3) | ≤ 1.5 s and ≤ 0.15× |"
    ]
    out += ["|---|---|---|---|---|"]
    for engine in NOOP_ENGINES:
        row, tag = runs.get(f"noop/{engine}"), runs.get(f"tag-only/{engine}")
        source = engine == res.get("source")
        s, t = _s(row), (_s(row) if source else _s(tag))
        ratio = s / save if s and save else None
        held = s is not None and t is not None and max(s, t) <= 1.5 and (ratio or 9) <= 0.15
        tag_cell = "— (the source itself)" if source else _cell(tag)
        out.append(
            f"| {engine} | {_cell(row)} | {_fmt(ratio, '×')} | {tag_cell} | "
            f"{'held' if held else '**not held**'} |"
        )
    out += ["", f"## Cold: {BIG}:v1 (~700 MB, one dominant layer) at 100 Mbit/s", ""]
    out += [_source_line(runs, "cold"), ""]
    out += [f"The pipe and shipit ran {RUNS} times each, in turn: the medians, with every run."]
    out += [
        "",
        "| target | how | seconds | bytes on the wire | shipit ÷ it |",
        "|---|---|---|---|---|",
    ]
    for target in COLD_TARGETS:
        ship = _s(runs.get(f"cold/{target}/shipit"))
        for method in ("shipit", "pipe", "byhand", "skopeo"):
            row = runs.get(f"cold/{target}/{method}")
            moved = (row or {}).get("wire_tx_bytes") if (row or {}).get("ok") else None
            s = _s(row)
            ratio = _fmt(ship / s, "×") if ship and s and method != "shipit" else ""
            title = esc((row or {}).get("title", method))
            mb = f"{moved / 1e6:,.0f} MB" if moved else ""
            out.append(f"| {target} | `{title}` | {_cell(row)} | {mb} | {ratio} |")
        pipe = _s(runs.get(f"cold/{target}/pipe"))
        rate = measured_rate(runs, target)
        at = f"{rate / 1e6:.2f} MB/s measured through SSH" if rate else "100 Mbit/s"
        for stages, what in (
            (False, "target after the last byte"),
            (True, "target after the last byte and registering the stage below"),
        ):
            floor = cold_floor(runs, target, stages=stages)
            nominal = cold_floor(runs, target, stages=stages, nominal=True)
            held = ship and pipe and floor and ship <= pipe and ship <= 1.1 * floor
            of_floor = _fmt(ship / floor if ship and floor else None, "×")
            at_nominal = _fmt(ship / nominal if ship and nominal else None, "×")
            out.append(
                f"| {target} | floor: first byte + bytes sent at the link's {at} + {what} "
                f"(at the nominal 12.5 MB/s: {_fmt(nominal)}, shipit ÷ it {at_nominal}) | "
                f"{_fmt(floor)} | | shipit ÷ floor {of_floor}; ≤ pipe and ≤ 1.1× floor: "
                f"{'held' if held else '**not held**'} |"
            )
    for case in REDEPLOYS:
        out += _redeploy_table(runs, case)
    return "\n".join(out) + "\n"


def _redeploy_table(runs: dict, case: str) -> list[str]:
    image, times = REDEPLOYS[case]
    if not any(k.startswith(f"{case}/") for k in runs):
        return []
    out = ["", f"## Redeploy: {image}:v2 onto {image}:v1", "", _source_line(runs, case), ""]
    out += [
        f"Each ship ran right after a `docker save {image}:v2 > /dev/null` of its own, "
        f"{times} times: the ratio is to the median of those saves.",
        "",
        "| target | link | seconds | the saves beside it | ÷ save | ≤ 1.2× |",
        "|---|---|---|---|---|---|",
    ]
    rsave = _s(runs.get(f"{case}/save-null"))
    for target in COLD_TARGETS:
        for link in ("lo", "slow"):
            row = runs.get(f"{case}/{target}/{link}")
            paired = (row or {}).get("paired_save")
            s, base = _s(row), _s(paired) or rsave
            ratio = s / base if s and base else None
            held = "held" if ratio is not None and ratio <= 1.2 else "**not held**"
            out.append(
                f"| {target} | {link} | {_cell(row)} | {_cell(paired)} | "
                f"{_fmt(ratio, '×')} | {held} |"
            )
    return out


def _source_line(runs: dict, case: str) -> str:
    row = runs.get(f"{case}/first-byte") or {}
    every = [x for x in row.get("all_first_byte_seconds") or [] if x is not None]
    spread = f" ({', '.join(f'{x:.1f}' for x in every)})" if len(every) > 1 else ""
    return (
        f"The source's first byte: {_fmt(row.get('first_byte_seconds'))}{spread}; its whole "
        f"save to /dev/null: {_cell(runs.get(f'{case}/save-null'))} (medians of {RUNS})."
    )


def _machine() -> str:
    m = bench.machine()
    return f"{m['cores']} cores ({m['cpu']}), {m['os']}, shipit {m['shipit_commit']}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=bench.ROOT / "docs")
    p.add_argument("--render", type=Path, help="rewrite the Markdown from this JSON")
    p.add_argument(
        "--only", default="noop,cold,redeploy,redeploy-2g", help="comma list of the cases"
    )
    args = p.parse_args()
    if args.render:
        res = json.loads(args.render.read_text())
        (args.out / "benchmarks-floor.md").write_text(render(res))
        return 0
    subprocess.run(["bash", str(bench.NETNS_SH), "up"], check=True, env=bench.ENV)
    build_images(bench.SOURCE)  # bench:v1 and v2 (bench.py's, unless missing)
    build_bigbase()
    cases = args.only.split(",")
    runs: dict[str, Any] = {}
    earlier = args.out / "benchmarks-floor.json"
    if earlier.exists():  # the cases not run now keep their rows from the last run
        old = json.loads(earlier.read_text()).get("runs", {})
        runs = {k: v for k, v in old.items() if k.split("/")[0] not in cases}
    for case in cases:
        if case in REDEPLOYS:
            redeploy(runs, case)
        else:
            {"noop": noop, "cold": cold}[case](runs)
    res = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "source": bench.SOURCE,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks-floor.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "benchmarks-floor.md").write_text(render(res))
    bench.log(f"wrote {args.out / 'benchmarks-floor.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
