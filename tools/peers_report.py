"""Tables, speed targets and the plot of ``bench_peers.py`` reports (pure functions of the JSON).

>>> rows = [
...     {"learner": "edgecl ncm", "family": "edgecl", "avg_accuracy": 0.8,
...      "learn_us": {"p50": 10.0}, "sample_us_mean": 40.0},
...     {"learner": "river GaussianNB", "family": "river", "avg_accuracy": 0.7,
...      "learn_us": {"p50": 150.0}, "sample_us_mean": 900.0},
... ]
>>> t = targets(rows)["river"][0]
>>> t["edgecl"], t["speedup_p50"], t["met"]
('edgecl ncm', 15.0, True)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["merge", "plot", "print_stream", "table", "target_lines", "targets"]


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The README's speed targets on one stream (reported, never asserted)."""
    by = {r["learner"]: r for r in rows}
    out: dict[str, Any] = {}
    e, t = by.get("edgecl softmax+replay+ewc"), by.get("torch softmax+replay+ewc")
    if e and t:
        ratio = t["learn_us"]["p50"] / e["learn_us"]["p50"]
        out["torch"] = {
            "edgecl": e["learner"],
            "peer": t["learner"],
            "speedup_p50": round(ratio, 2),
            "speedup_sample_mean": round(t["sample_us_mean"] / e["sample_us_mean"], 2),
            "target": 20.0,
            "met": ratio >= 20.0,
            "accuracy": [e["avg_accuracy"], t["avg_accuracy"]],
        }
    edge = [r for r in rows if r["family"] == "edgecl"]
    river = []
    for r in (r for r in rows if r["family"] == "river"):
        ok = [x for x in edge if x["avg_accuracy"] >= r["avg_accuracy"]]
        if not ok:
            river.append({"peer": r["learner"], "edgecl": None, "met": False})
            continue
        best = min(ok, key=lambda x: x["learn_us"]["p50"])
        ratio = r["learn_us"]["p50"] / best["learn_us"]["p50"]
        river.append(
            {
                "peer": r["learner"],
                "edgecl": best["learner"],
                "speedup_p50": round(ratio, 2),
                "speedup_sample_mean": round(r["sample_us_mean"] / best["sample_us_mean"], 2),
                "target": 10.0,
                "met": ratio >= 10.0,
                "accuracy": [best["avg_accuracy"], r["avg_accuracy"]],
            }
        )
    if river:
        out["river"] = river
    return out


def table(rows: list[dict[str, Any]], skipped: list[dict[str, str]]) -> str:
    hold = any(r["holdout_accuracy"] is not None for r in rows)
    lines = [
        "| learner | final avg acc | prequential | "
        + ("held-out subj. | " if hold else "")
        + "learn µs p50 / p99 | predict µs p50 / p99 | memory bytes (measure) |",
        "|---|---|---|---|---|---|" + ("---|" if hold else ""),
    ]
    for r in rows:
        mem = r["memory_bytes"]
        h = f"{r['holdout_accuracy']:.4f} | " if hold else ""
        lines.append(
            f"| {r['learner']} | {r['avg_accuracy']:.4f} | {r['prequential_accuracy']:.4f} | {h}"
            f"{_f(r['learn_us']['p50'])} / {_f(r['learn_us']['p99'])} "
            f"| {_f(r['predict_us']['p50'])} / {_f(r['predict_us']['p99'])} "
            f"| {'–' if mem is None else f'{mem:,}'} ({r['memory_measure']}) |"
        )
    for s in skipped:
        lines.append(f"| {s['learner']} | skipped: {s['reason']} |" + " |" * (5 + hold))
    return "\n".join(lines)


def _f(us: float) -> str:
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def target_lines(t: dict[str, Any]) -> list[str]:
    out = []
    if "torch" in t:
        x = t["torch"]
        out.append(
            f"edgecl softmax+replay+ewc learn_one is {x['speedup_p50']}× faster (p50) than the "
            f"torch per-sample learner (target ≥ 20×: {'met' if x['met'] else 'MISSED'}; "
            f"learn+predict mean {x['speedup_sample_mean']}×); "
            f"accuracy {x['accuracy'][0]:.4f} vs {x['accuracy'][1]:.4f}"
        )
    for x in t.get("river", []):
        if x["edgecl"] is None:
            out.append(f"{x['peer']}: no edgecl head reaches its accuracy (target MISSED)")
        else:
            out.append(
                f"{x['peer']}: {x['edgecl']} is {x['speedup_p50']}× faster at ≥ its accuracy "
                f"({x['accuracy'][0]:.4f} vs {x['accuracy'][1]:.4f}; target ≥ 10×: "
                f"{'met' if x['met'] else 'MISSED'}; learn+predict mean "
                f"{x['speedup_sample_mean']}×)"
            )
    return out


_STYLE = {"edgecl": ("C0", "o"), "torch": ("C3", "s"), "river": ("C2", "^"), "sklearn": ("C1", "D")}


def _short(name: str) -> str:
    """Point label: the family is in the colour, so drop it and the longer asides."""
    for pre in ("edgecl ", "river ", "sklearn "):
        name = name.removeprefix(pre)
    name = name.replace(" (transcribed)", "*").replace(" (k=5, window 1000)", "")
    return name.replace("torch softmax", "torch sm").replace("(log_loss)", "")


def plot(report: dict[str, Any], path: str) -> None:
    """Accuracy against µs per learn_one (log x), one panel per stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = report["streams"]
    ncols = min(3, len(streams))
    nrows = -(-len(streams) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.6 * nrows + 0.4), squeeze=False)
    for ax in axes.flat[len(streams) :]:
        ax.set_visible(False)
    for ax, s in zip(axes.flat, streams, strict=False):
        for i, r in enumerate(s["results"]):
            color, marker = _STYLE.get(r["family"], ("k", "x"))
            ax.scatter(r["learn_us"]["p50"], r["avg_accuracy"], c=color, marker=marker, s=30)
            ax.annotate(
                _short(r["learner"]),
                (r["learn_us"]["p50"], r["avg_accuracy"]),
                fontsize=6,
                xytext=(3, 2 if i % 2 == 0 else -7),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel("µs per learn_one (p50, log)")
        ax.set_title(f"{s['name']} ({s['n_train']} samples, d={s['dim']})", fontsize=9)
        ax.grid(alpha=0.3, which="both", linewidth=0.5)
    for row in axes:
        row[0].set_ylabel("final average accuracy")
    handles = [
        plt.Line2D([], [], color=c, marker=m, linestyle="", label=f) for f, (c, m) in _STYLE.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.4 / (3.6 * nrows + 0.4), 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def print_stream(s: dict[str, Any]) -> None:
    print(
        f"\n### {s['name']}: {s['dataset']}, {s['embeddings']}, {s['n_train']} samples, "
        f"{s['n_tasks']} tasks, d={s['dim']}\n"
    )
    print(table(s["results"], s["skipped"]))
    for line in target_lines(s["targets"]):
        print(f"- {line}")


def merge(paths: list[str]) -> dict[str, Any]:
    """One report from the streams of several ``--json`` reports (to table and plot them)."""
    reports = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    merged = dict(reports[0])
    merged["streams"] = [s for r in reports for s in r["streams"]]
    merged["sources"] = [
        {"path": p, "machine": r["machine"]} for p, r in zip(paths, reports, strict=True)
    ]
    return merged
