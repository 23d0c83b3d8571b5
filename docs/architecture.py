"""Draw docs/architecture.png: smallnets' modules on floors computed from the real import graph
(each module one floor above everything it imports), an arrow per import. Run from the repository
root: ``python docs/architecture.py``."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import import_graph as ig  # noqa: E402

# one colour per part of the house, named in the README's Architecture section
PARTS = {
    "foundation": ("#d9d9d9", ("smallnets._checks", "smallnets._io", "smallnets._paths", "smallnets.progress", "smallnets.distributed")),
    "specs + registry": ("#b3de69", ("smallnets.arch", "smallnets.registry", "smallnets.scaling")),
    "modules": ("#80b1d3", ("smallnets.layers", "smallnets.models")),
    "weights + cost": ("#fdb462", ("smallnets.checkpoint", "smallnets.pretrained", "smallnets.profiler")),
    "factory": ("#fb8072", ("smallnets.zoo",)),
    "data": ("#bebada", ("smallnets.data",)),
    "workflows": ("#ffffb3", ("smallnets.training", "smallnets.rundir", "smallnets.fast_cpu", "smallnets.metrics", "smallnets.evaluation", "smallnets.prediction", "smallnets.compare", "smallnets.plots")),
    "shrink": ("#ccebc5", ("smallnets.compress",)),
    "ship": ("#8dd3c7", ("smallnets.imaging", "smallnets.predictions", "smallnets.runtime", "smallnets.export", "smallnets.onnx_module",
                         "smallnets.quantization", "smallnets.qat", "smallnets.bench")),  # fmt: skip
    "study": ("#bc80bd", ("smallnets.sweep", "smallnets.pick", "smallnets.report")),
    "command line": ("#fccde5", ("smallnets.cli", "smallnets.__main__")),
}


def part_of(module: str) -> str:
    for part, (_, prefixes) in PARTS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return part
    return "foundation"


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    floor: dict[str, int] = {}

    def visit(m: str, seen: tuple = ()) -> int:
        if m in floor:
            return floor[m]
        if m in seen:  # a circle (the tests refuse them): stop rather than recurse forever
            return 0
        floor[m] = f = 1 + max((visit(d, (*seen, m)) for d in graph[m]), default=0)
        return f

    for m in sorted(graph):
        visit(m)
    return floor


def main(out: Path = ROOT / "docs" / "architecture.png") -> Path:
    graph = {k: v - {"smallnets"} for k, v in ig.import_graph().items() if k != "smallnets"}
    floor = floors(graph)
    rows = defaultdict(list)
    for m, f in floor.items():
        rows[f].append(m)
    width = max(len(r) for r in rows.values())
    fig, ax = plt.subplots(figsize=(max(12, width * 1.7), len(rows) * 1.05 + 1))
    pos = {}
    for f, mods in rows.items():
        mods.sort(key=lambda m: (list(PARTS).index(part_of(m)), m))
        for i, m in enumerate(mods):
            pos[m] = ((i + 0.5) * width / len(mods), f)
    for m, deps in graph.items():
        for d in deps:
            (x0, y0), (x1, y1) = pos[m], pos[d]
            ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                        arrowprops={"arrowstyle": "->", "color": "#00000030", "lw": 0.6})  # fmt: skip
    for m, (x, y) in pos.items():
        colour = PARTS[part_of(m)][0]
        half = 0.45 * width / len(rows[floor[m]])  # boxes fill 90% of their slot on the floor
        ax.add_patch(FancyBboxPatch((x - half, y - 0.18), 2 * half, 0.36, boxstyle="round,pad=0.02", fc=colour, ec="#555555", lw=0.6))
        ax.text(x, y, m.removeprefix("smallnets."), ha="center", va="center", fontsize=7)
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(0.4, len(rows) + 0.6)
    ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c, ec="#555555") for c, _ in PARTS.values()]
    ax.legend(handles, list(PARTS), loc="upper left", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0, 1.02))
    ax.set_title("smallnets: each module one floor above what it imports (imports inside functions included)", fontsize=10, loc="left", pad=24)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
