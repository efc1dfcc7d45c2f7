"""The model table: layers in forward order, their output shapes, their parameters."""

from __future__ import annotations

import torch

from trainlab.models.cnn import CNN
from trainlab.monitor.model_summary import summarize


def test_rows_follow_the_forward_pass_with_shapes_and_parameter_counts():
    model = CNN([3, 32, 32], 7, channels=[8, 16])
    rows = summarize(model, (3, 32, 32), torch.device("cpu"), max_depth=1)
    names = [row.name for row in rows]
    assert names == ["features", "pool", "dropout", "head"]
    by_name = {row.name: row for row in rows}
    assert by_name["features"].output_shape == "16x16x16" and by_name["head"].output_shape == "7"
    assert by_name["head"].params == 16 * 7 + 7
    assert sum(row.params for row in rows) == sum(p.numel() for p in model.parameters())


def test_children_are_listed_after_their_parent_and_modes_are_restored():
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(16, 5), nn.ReLU()), nn.Linear(5, 3))
    model.train()
    rows = summarize(model, (1, 4, 4), torch.device("cpu"), max_depth=2)
    assert model.training, "the model's mode is restored"
    assert [(r.name, r.output_shape) for r in rows] == [("0", "16"), ("1", "5"), ("1.0", "5"), ("1.1", "5"), ("2", "3")]
    assert [r.params for r in rows] == [0, 85, 85, 0, 18]


def test_batch_norm_statistics_do_not_move():
    model = CNN([1, 8, 8], 2, channels=[4])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model, (1, 8, 8), torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
