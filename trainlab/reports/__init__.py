"""`trainlab report`: the answer of a sweep, read back from its run folders (no torch).

    runs.py      find the run folders under some paths and read each one (summary.json, .hydra/)
    table.py     the swept keys, the order (best first), the rich table, summary.csv / summary.json
    grouping.py  runs that differ only by seed or dataset.fold: mean ± std and n per group
    plots.py     the val curves of the top runs (TensorBoard events) and metric vs each swept number
    html.py      one self-contained page (inline CSS, PNGs as data: URIs)

The command (trainlab/commands/report.py) puts them together.
"""
