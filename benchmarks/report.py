"""Turn the results JSON files into the tables and chart of docs/BENCHMARKS.md.

    python benchmarks/report.py [--quick] [--write-doc]

Prints the Markdown tables; ``--write-doc`` also replaces the generated part of
docs/BENCHMARKS.md (between the ``results:start``/``results:end`` markers, so the hand-written
sections around it stay) and saves the chart as docs/benchmarks-streaming.png. With
``--quick`` the chart goes to ``_work/quick/`` and the doc is left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, load_results, preset_from_args  # noqa: E402

DOC = REPO / "docs" / "BENCHMARKS.md"
CHART = REPO / "docs" / "benchmarks-streaming.png"
START, END = "<!-- results:start -->", "<!-- results:end -->"
STREAM_LIBS = ["benchkit", "litdata", "streaming", "webdataset", "plain"]
NAMES = {"benchkit": "BenchKit", "litdata": "LitData", "streaming": "Streaming (MDS)",
         "webdataset": "WebDataset", "plain": "plain map-style Dataset (files)"}


def spread(s: dict[str, Any], fmt: str = "{:.0f}", scale: float = 1.0) -> str:
    """'median (min–max)' for a summarize() dict."""
    if s["n"] == 1:
        return fmt.format(s["median"] * scale)
    return f"{fmt.format(s['median'] * scale)} ({fmt.format(s['min'] * scale)}–{fmt.format(s['max'] * scale)})"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "–"


def convert_table(res: dict) -> list[str]:
    libs = res["libraries"]
    bk = libs.get("benchkit", {}).get("seconds", {}).get("median")
    out = [f"Input: {res['images']:,} JPEGs, {res['input_bytes'] / 1e6:,.0f} MB; {res['workers']} worker "
           f"processes each; target shard size {res['shard_bytes'] // 2**20} MiB. The images are evicted from "
           "the page cache before every run, so every library reads them from disk.", "",
           "*Seconds*: until the library's call returns; *on disk*: until `os.sync()` after it returns "
           "(BenchKit fsyncs every chunk itself, the others leave the writing to the kernel).", "",
           "| library | seconds, median (min–max) | on disk, s | images/s | output MB | files | BenchKit time / this | same, on disk | peak memory, MB |",
           "|---|---|---|---|---|---|---|---|---|"]
    bks = libs.get("benchkit", {}).get("synced_seconds", {}).get("median")
    for lib, r in libs.items():
        if "skipped" in r:
            out.append(f"| {NAMES[lib]} | skipped: {r['skipped']} | | | | | | | |")
            continue
        s, sy = r["seconds"], r.get("synced_seconds")
        out.append(f"| {NAMES[lib]} | {spread(s, '{:.1f}')} | {spread(sy, '{:.1f}') if sy else '–'} | "
                   f"{res['images'] / s['median']:,.0f} | {r['bytes'] / 1e6:,.0f} | {r['files']} | "
                   f"{ratio(bk, s['median'])} | {ratio(bks, sy['median']) if sy else '–'} | "
                   f"{spread(r['peak_anon_mb']) if 'peak_anon_mb' in r else '–'} |")
    return out


def mem(r: dict) -> str:
    if "mem_anon_mb" not in r:
        return "–"
    return f"{r['mem_anon_mb']['median']:,.0f} / {r['mem_file_mb']['median']:,.0f}"


def limit_for(limit: dict | None, mode: str, epoch: int, store: str = "local") -> float | None:
    if not limit:
        return None
    if mode == "decode":
        return limit["decode"]["samples_per_s"]["median"]
    if store == "s3" and epoch == 1:  # downloads; epoch 2 reads the local cache
        return limit["s3_read"]["samples_per_s"]["median"] if "s3_read" in limit else None
    key = "read_cold" if epoch == 1 else "read_warm"
    return limit[key]["samples_per_s"]["median"]


def stream_tables(res: dict, limit: dict | None) -> list[str]:
    rows = res["results"]
    out = [f"Samples/s over one epoch, median (min–max) of {res['repeats']} runs; batch size "
           f"{res['batch_size']}, {res['workers']} DataLoader workers, shuffle on. "
           "*Ratio* = BenchKit's samples/s divided by this library's (above 1: BenchKit is faster); "
           "*of limit* = this library's samples/s as a fraction of the limit below. *CPU ms/sample*: CPU time "
           "of the training process and its DataLoader workers per sample (user + system), a cost that "
           "background load on the machine barely changes, unlike samples/s. *Memory*: peak resident memory of "
           "the training process and its workers together, allocated (heap and shared memory) / "
           "memory-mapped file pages (page cache, reclaimable), MB, over both epochs.", ""]
    for store in ("local", "s3"):
        for mode in ("raw", "decode"):
            keys = [f"{lib}|{mode}|{store}" for lib in STREAM_LIBS if f"{lib}|{mode}|{store}" in rows]
            if not keys:
                continue
            title = {"raw": "raw bytes, no decode", "decode": "Pillow decode + resize to 224"}[mode]
            where = {"local": "local directory", "s3": "S3 (moto_server on 127.0.0.1)"}[store]
            out += [f"**{where}, {title}**", "",
                    "| library | epoch 1 (cold) | epoch 2 | first batch, s | ratio ep. 1 | ratio ep. 2 | of limit ep. 1 | of limit ep. 2 | CPU ms/sample ep. 1 | CPU ms/sample ep. 2 | memory, MB |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
            bk = rows.get(f"benchkit|{mode}|{store}")
            bk = bk if bk and "epoch1" in bk else None
            for k in keys:
                r = rows[k]
                if "timed_out_s" in r:
                    out.append(f"| {NAMES[r['library']]} | did not finish two epochs in {r['timed_out_s']} s | | | | | | | | | |")
                    continue
                e1, e2 = r["epoch1"]["median"], r["epoch2"]["median"]
                l1, l2 = limit_for(limit, mode, 1, store), limit_for(limit, mode, 2, store)
                out.append(
                    f"| {NAMES[r['library']]} | {spread(r['epoch1'])} | {spread(r['epoch2'])} | "
                    f"{spread(r['first_batch_s'], '{:.2f}')} | "
                    f"{ratio(bk['epoch1']['median'], e1) if bk else '–'} | {ratio(bk['epoch2']['median'], e2) if bk else '–'} | "
                    f"{ratio(e1, l1)} | {ratio(e2, l2)} | "
                    f"{spread(r['cpu_ms1'], '{:.2f}') if 'cpu_ms1' in r else '–'} | "
                    f"{spread(r['cpu_ms2'], '{:.2f}') if 'cpu_ms2' in r else '–'} | "
                    f"{mem(r)} |")
            if limit:
                if mode == "raw" and store == "s3" and "s3_read" in limit:
                    out.append(f"| *limit: GET of the shard objects, {limit['s3_read']['threads']} at a time; "
                               f"epoch 2: read of the cached files* | {spread(limit['s3_read']['samples_per_s'])} | "
                               f"{spread(limit['read_warm']['samples_per_s'])} | | | | | | | | |")
                elif mode == "raw":
                    out.append(f"| *limit: sequential read of the chunk files* | "
                               f"{spread(limit['read_cold']['samples_per_s'])} (disk) | "
                               f"{spread(limit['read_warm']['samples_per_s'])} (page cache) | | | | | | | | |")
                else:
                    cpu = limit["decode"].get("cpu_ms_per_sample")
                    cpu_s = spread(cpu, "{:.2f}") if cpu else ""
                    out.append(f"| *limit: decode + resize only, {limit['decode']['workers']} processes* | "
                               f"{spread(limit['decode']['samples_per_s'])} | same | | | | | | {cpu_s} | {cpu_s} | |")
            out.append("")
    if res.get("skipped"):
        out += [f"Skipped: {', '.join(f'{k} ({v})' for k, v in res['skipped'].items())}", ""]
    return out


def limit_table(limit: dict) -> list[str]:
    return [
        f"Read of {limit['files']} {limit['shards']} chunk files, {limit['bytes'] / 1e6:,.0f} MB, 8 MiB reads; "
        f"the files {'evicted from the page cache' if limit['page_cache_dropped'] else 'could NOT be evicted from the page cache (cold figures are page-cache reads)'} "
        "before the cold read.", "",
        "| what | MB/s | samples/s |", "|---|---|---|",
        f"| sequential read, cold (disk) | {spread(limit['read_cold']['mb_per_s'])} | {spread(limit['read_cold']['samples_per_s'])} |",
        f"| sequential read, warm (page cache) | {spread(limit['read_warm']['mb_per_s'])} | {spread(limit['read_warm']['samples_per_s'])} |",
        f"| decode + resize only, {limit['decode']['workers']} processes, bytes in memory | – | {spread(limit['decode']['samples_per_s'])} |",
    ] + ([f"| S3 GET of the same bytes from moto_server, {limit['s3_read']['threads']} at a time (boto3) | "
          f"{spread(limit['s3_read']['mb_per_s'])} | {spread(limit['s3_read']['samples_per_s'])} |"]
         if "s3_read" in limit else [])


def resume_table(res: dict) -> list[str]:
    out = ["| library | load_state_dict → first batch, s | fresh start → first batch, s | exact remainder |",
           "|---|---|---|---|"]
    for lib, r in res["results"].items():
        out.append(f"| {NAMES[lib]} | {spread(r['resume_first_batch_s'], '{:.2f}')} | "
                   f"{spread(r['fresh_first_batch_s'], '{:.2f}')} | {'yes' if r['exact'] else 'NO'} |")
    return out


def first_batch_table(res: dict) -> list[str]:
    out = ["BenchKit, raw mode, 2 workers, shuffle on, chunk files evicted from the page cache and no "
           "record of verified chunks (a fresh BENCHKIT_HOME): a first epoch on a new machine.", "",
           "| chunk size | first batch, s |", "|---|---|"]
    for mib, s in res["chunk_mib"].items():
        out.append(f"| {mib} MiB | {spread(s, '{:.2f}')} |")
    return out


def train_table(res: dict) -> list[str]:
    s, w = res["step_s"], res["wall_s"]
    return [
        f"{res['steps']} steps of a small CNN (batch 32, CPU, in-memory data); step time median over steps "
        f"{res['warmup_steps'] + 1}–{res['steps']}, then median (min–max) over runs.", "",
        "| | median step, ms | whole command, s |", "|---|---|---|",
        f"| `python -m benchkit run` | {spread(s['benchkit'], '{:.1f}', 1e3)} | {spread(w['benchkit'], '{:.1f}')} |",
        f"| plain Accelerate | {spread(s['plain'], '{:.1f}', 1e3)} | {spread(w['plain'], '{:.1f}')} |",
        f"| **ratio BenchKit / plain** | **{ratio(s['benchkit']['median'], s['plain']['median'])}** | "
        f"{ratio(w['benchkit']['median'], w['plain']['median'])} |",
    ]


def chart(res: dict, limit: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = res["results"]
    panels = [(s, m) for s in ("local", "s3") for m in ("raw", "decode")
              if any(f"{lib}|{m}|{s}" in rows for lib in STREAM_LIBS)]
    cols = min(2, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 4.2 * rows_n), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (store, mode) in zip(axes.flat, panels, strict=False):
        libs = [lib for lib in STREAM_LIBS if "epoch1" in rows.get(f"{lib}|{mode}|{store}", {})]
        x = np.arange(len(libs))
        for j, (ep, label) in enumerate((("epoch1", "epoch 1 (cold)"), ("epoch2", "epoch 2"))):
            med = [rows[f"{lib}|{mode}|{store}"][ep]["median"] for lib in libs]
            lo = [m - rows[f"{lib}|{mode}|{store}"][ep]["min"] for m, lib in zip(med, libs, strict=True)]
            hi = [rows[f"{lib}|{mode}|{store}"][ep]["max"] - m for m, lib in zip(med, libs, strict=True)]
            ax.bar(x + (j - 0.5) * 0.38, med, 0.38, yerr=[lo, hi], capsize=3, label=label,
                   color=["#3b6ea5", "#9cc3e6"][j])
        lim = limit_for(limit, mode, 1 if store == "s3" else 2, store)
        if lim:
            what = "decode only" if mode == "decode" else ("S3 GET" if store == "s3" else "read (page cache)")
            ax.axhline(lim, color="#c0392b", ls="--", lw=1, label="limit: " + what)
        ax.set_xticks(x, [NAMES[lib].split(" (")[0].replace("plain map-style Dataset", "plain files") for lib in libs],
                      rotation=30, ha="right")
        ax.set_title(f"{store}, {'raw bytes' if mode == 'raw' else 'decode + resize'}")
        ax.set_ylabel("samples/s")
        if mode == "raw":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle("Streaming throughput, one epoch (median, bars: min–max)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def render(preset) -> tuple[str, dict | None, dict | None]:
    conv, stream, limit = (load_results(preset, b) for b in ("convert", "stream", "limit"))
    resume, train = load_results(preset, "resume"), load_results(preset, "train")
    first_batch = load_results(preset, "first_batch")
    first = next((r for r in (stream, conv, limit, resume, train) if r), None)
    lines: list[str] = []
    if first:
        m = first["machine"]
        lines += [f"Results of the `{preset.name}` setting, finished {first['finished']}, on "
                  f"{m.get('cpus')} CPUs ({m.get('cpu', '?')}), {m.get('mem_gib', '?')} GiB RAM, "
                  f"Python {m.get('python')}.", ""]
    sections = [("Conversion", conv, convert_table), ("Streaming", stream, lambda r: stream_tables(r, limit)),
                ("The limit", limit, limit_table), ("Resume cost", resume, resume_table),
                ("Time to the first batch of a cold epoch, by chunk size", first_batch, first_batch_table),
                ("Training overhead", train, train_table)]
    for title, res, fn in sections:
        lines += [f"### {title}", ""]
        lines += fn(res) if res else ["Not measured in this run."]
        lines.append("")
    return "\n".join(lines), stream, limit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args(argv)
    preset = preset_from_args(args.quick)
    text, stream, limit = render(preset)
    sys.stdout.write(text + "\n")
    chart_path = CHART if (args.write_doc and not args.quick) else WORK / preset.name / "streaming.png"
    if stream:
        chart(stream, limit, chart_path)
        sys.stderr.write(f"chart: {chart_path}\n")
    if args.write_doc and not args.quick:
        doc = DOC.read_text()
        a, b = doc.index(START) + len(START), doc.index(END)
        DOC.write_text(doc[:a] + "\n\n" + text + "\n" + doc[b:])
        sys.stderr.write(f"updated {DOC}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
