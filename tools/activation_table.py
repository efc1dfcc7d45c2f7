"""The classic initialization experiment as one markdown table: layer std of a 10-layer MLP (500 units a
layer, no normalization, zero biases) on 1000 unit-Gaussian inputs, for several initializations.

    .venv/bin/python tools/activation_table.py

Each column is exactly `trainlab activations dataset=gaussian model=mlp_deep <column's overrides>`,
measured in-process through the command's own code (trainlab.commands.activations.measure_overrides).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

BASE = ["dataset=gaussian", "model=mlp_deep"]
# (column header, overrides). Xavier with the paper's gain 1 (init=xavier_normal's default gain follows the
# activation: sqrt(2) for relu, which for square layers is exactly He's init).
CASES = [
    ("tanh, normal std 0.01", ["model.activation=tanh", "init=normal", "init.weight.std=0.01"]),
    ("tanh, normal std 1.0", ["model.activation=tanh", "init=normal", "init.weight.std=1.0"]),
    ("tanh, xavier_normal", ["model.activation=tanh", "init=xavier_normal", "init.weight.gain=1.0"]),
    ("relu, xavier_normal", ["model.activation=relu", "init=xavier_normal", "init.weight.gain=1.0"]),
    ("relu, kaiming_normal", ["model.activation=relu", "init=kaiming_normal"]),
]


def cell(row: dict) -> str:
    """The layer's std, with the share of saturated outputs (tanh) or dead units (relu)."""
    if row["saturated"] is not None:
        return f"{row['std']:.3g} ({100 * row['saturated']:.0f}% sat.)"
    if row["dead"] is not None:
        return f"{row['std']:.3g} ({100 * row['dead']:.0f}% dead)"
    return f"{row['std']:.3g}"


def table(cases=CASES, base=BASE) -> str:
    from trainlab.commands.activations import measure_overrides

    columns = [(header, measure_overrides(base + overrides).rows) for header, overrides in cases]
    depth = max(len(rows) for _, rows in columns)
    lines = ["| layer | " + " | ".join(header for header, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for i in range(depth):
        name = next(rows[i]["name"] for _, rows in columns if i < len(rows))
        cells = [cell(rows[i]) if i < len(rows) else "" for _, rows in columns]
        lines.append(f"| {i + 1} ({name}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(table())
    print()
    print("Cells: std of the layer's outputs over the batch (tanh: share of outputs with |y| > 0.99; relu: share "
          "of units never positive on the batch). Columns: `trainlab activations " + " ".join(BASE) + " ...` with")
    for header, overrides in CASES:
        print(f"- {header}: `{' '.join(overrides)}`")


if __name__ == "__main__":
    main()
