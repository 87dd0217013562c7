"""Print the throughput table of docs/benchmarks.md from the runs of benchmarks/throughput.sh:
one row per variant (img/s of data alone, model step alone, end to end; data wait, peak memory,
MFU, host syncs per step), then the ratios the GPU-throughput goals are stated in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABELS = {
    "cpu_path": "CPU data path (PIL, DataLoader workers)",
    "gpu_path": "GPU data path",
    "gpu_compiled": "GPU data path + torch.compile",
    "gpu_compiled_infonce": "GPU data path + torch.compile, InfoNCE (no label queue)",
    "gpu_compiled_noguard": "GPU data path + torch.compile, no non-finite guard",
}


def _cell(value: float | None, form: str) -> str:
    return "–" if value is None else format(value, form)


def _syncs(result: dict) -> str:
    syncs = result.get("host_syncs_per_step")
    if syncs is None:
        return "–"
    return ", ".join(f"{name} {count:g}" for name, count in syncs.items()) or "none"


def _failure(out: Path, variant: str) -> str:
    """Why a variant has no results: the exit status its log ends with, if any."""
    log = out / f"{variant}.log"
    lines = log.read_text().splitlines() if log.is_file() else []
    status = lines[-1] if lines and lines[-1].startswith("exit status") else "not run"
    return f"no result ({status}{', timed out' if status == 'exit status 124' else ''})"


def _extra_time(what: str, with_it: dict, without_it: dict) -> list[str]:
    """What ``what`` adds to the time per image, in the step alone and end to end."""
    return [
        f"{what}, {phase.replace('_', ' ')}: "
        f"{100 * (without_it[phase]['img_per_s'] / with_it[phase]['img_per_s'] - 1):+.1f} % "
        "time per image"
        for phase in ("step", "end_to_end")
    ]


def table(out: Path, variants: list[str]) -> str:
    """The markdown table and the goal ratios for ``variants`` found in ``out``."""
    results = {}
    rows = [
        "| variant | data img/s | step img/s | end-to-end img/s | end-to-end / step | data wait "
        "| peak memory (GiB) | MFU end to end | host syncs per step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in variants:
        label = LABELS.get(variant, variant)
        path = out / f"{variant}.json"
        if not path.is_file():
            rows.append(f"| {label} | {_failure(out, variant)} |||||||")
            continue
        result = results[variant] = json.loads(path.read_text())
        data, step, e2e = result["data"], result["step"], result["end_to_end"]
        mfu = e2e.get("mfu")
        rows.append(
            f"| {label} | {data['img_per_s']:,.0f} | {step['img_per_s']:,.0f} "
            f"| {e2e['img_per_s']:,.0f} | {e2e['img_per_s'] / step['img_per_s']:.2f} "
            f"| {100 * e2e['data_wait_fraction']:.0f} % "
            f"| {_cell(max(step['peak_memory_gib'], e2e['peak_memory_gib']), '.2f')} "
            f"| {_cell(None if mfu is None else 100 * mfu, '.1f')}{'' if mfu is None else ' %'} "
            f"| {_syncs(result)} |"
        )
    lines = rows
    first = next(iter(results.values()), None)
    if first is not None:
        s = first["settings"]
        lines = [
            f"{first['device']}, torch {first['torch']}, {s['arch']} {s['input_size']} px, batch "
            f"{s['batch_per_process']} x {s['processes']}, queue {s['queue']}, labels "
            f"{100 * s['label_ratio']:.0f} %, {s['images']} images in {s['data_root']}, "
            f"{s['steps']} timed steps per phase, {first['date']}",
            "",
            *rows,
        ]
    compiled = results.get("gpu_compiled")
    if compiled:
        ratio = compiled["end_to_end"]["img_per_s"] / compiled["step"]["img_per_s"]
        lines.append(f"\nend to end / compiled model step alone: {100 * ratio:.1f} %")
    costs = (
        ("gpu_compiled_infonce", "label queue + UniCon over InfoNCE"),
        ("gpu_compiled_noguard", "non-finite guard (one host sync per step)"),
    )
    for without, what in costs:
        if compiled and without in results:
            lines += _extra_time(what, compiled, results[without])
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/throughput_table.py OUT [VARIANT ...]")
    print(table(Path(sys.argv[1]), sys.argv[2:] or list(LABELS)))
