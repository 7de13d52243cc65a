"""A fit's state between epochs: Adam's moments survive the safetensors round trip, so a continued fit
takes the step an uninterrupted one would, and each epoch's draw depends on the epoch alone."""

from __future__ import annotations

import torch

from longtail.config import RankerConfig
from longtail.train.fit_state import (
    FitEnd,
    early_stop,
    epoch_generator,
    load_optimizer_tensors,
    lr_scale_after,
    optimizer_tensors,
    read_end,
    write_end,
)


def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, n: int, seed: int) -> None:
    data = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(8, 4, generator=data)
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()


def test_a_fit_continued_from_its_written_end_matches_one_that_never_stopped(tmp_path):
    torch.manual_seed(0)
    straight = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    resumed = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    resumed.load_state_dict(straight.state_dict())
    adam = torch.optim.Adam(straight.parameters(), lr=0.05)
    _steps(straight, adam, 5, seed=1)
    end = FitEnd(
        {k: v.clone() for k, v in straight.state_dict().items()},
        {k: v.clone() for k, v in straight.state_dict().items()},
        optimizer_tensors(adam),
        {"epoch": 1, "best": 0.5, "bad": 0, "history": [{"epoch": 1.0}], "stopped": False},
    )
    write_end(end, tmp_path / "end")
    _steps(straight, adam, 3, seed=2)

    back = read_end(tmp_path / "end")
    assert back is not None and back.state == end.state and not back.stopped
    resumed.load_state_dict(back.current)
    fresh = torch.optim.Adam(resumed.parameters(), lr=0.05)
    load_optimizer_tensors(fresh, back.optimizer)
    _steps(resumed, fresh, 3, seed=2)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    # without the moments the continued steps differ (what keeping them is for)
    cold = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    cold.load_state_dict(back.current)
    _steps(cold, torch.optim.Adam(cold.parameters(), lr=0.05), 3, seed=2)
    assert not torch.allclose(cold[0].weight, straight[0].weight)


def test_an_incomplete_end_reads_as_none_and_epoch_draws_depend_on_the_epoch_only(tmp_path):
    (tmp_path / "end").mkdir()
    (tmp_path / "end" / "state.json").write_text("{}")
    assert read_end(tmp_path / "end") is None
    draw = [torch.randperm(100, generator=epoch_generator(0, 0, e)) for e in (3, 3, 4)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    assert not torch.equal(draw[0], torch.randperm(100, generator=epoch_generator(0, 1, 3)))  # per rank


def test_a_fit_is_finished_when_it_trained_every_epoch_or_stopped_early():
    def end(epoch: int, stopped: bool) -> FitEnd:
        return FitEnd({}, {}, {}, {"epoch": epoch, "best": 0.1, "bad": 0, "history": [], "stopped": stopped})

    assert end(3, False).finished(3) and end(2, True).finished(3)
    assert not end(2, False).finished(3) and not end(3, False).finished(6)  # a rung fit continued to 6


def _stopped_at(valid_ndcg: list[float], patience: int, min_epochs: int) -> int:
    """The epoch a fit with these per-epoch valid figures ends at (the fit loop's bookkeeping)."""
    best, bad = -1.0, 0
    for epoch, value in enumerate(valid_ndcg, start=1):
        best, bad = (value, 0) if value > best else (best, bad + 1)
        if early_stop(epoch, bad, patience, min_epochs):
            return epoch
    return len(valid_ndcg)


def test_early_stopping_waits_out_the_dip_after_a_popularity_like_first_epoch():
    food = [0.0125, 0.0114, 0.0122, 0.0129, 0.0141, 0.0167]  # measured: the rung fit, ID dropout 0
    defaults = RankerConfig()
    assert _stopped_at(food, defaults.patience, defaults.min_epochs) == 6  # trained to its best epoch
    assert _stopped_at(food, defaults.patience, 1) == 3  # patience alone kept epoch 1's weights
    flat = [0.20, 0.19, 0.19, 0.18, 0.18, 0.17, 0.17, 0.16]
    assert _stopped_at(flat, 2, 6) == 6  # a fit that never gains still ends at min_epochs
    rising = [0.10, 0.12, 0.14, 0.15, 0.16, 0.17, 0.18, 0.17, 0.17, 0.18]
    assert _stopped_at(rising, 2, 6) == 9  # after min_epochs patience acts as before


def _lr_scales(valid_ndcg: list[float], min_epochs: int, factor: float) -> list[float]:
    """The learning rate's share of lr each epoch trains at (the fit loop's bookkeeping)."""
    best, scale, scales = -1.0, 1.0, []
    for epoch, value in enumerate(valid_ndcg, start=1):
        scales.append(scale)
        improved = value > best
        best = max(best, value)
        scale = lr_scale_after(scale, improved, epoch, min_epochs, factor)
    return scales


def test_lr_plateau_halves_the_rate_after_each_epoch_without_a_gain_once_min_epochs_are_trained():
    defaults = RankerConfig()
    ml100k = [0.103, 0.143, 0.151, 0.166, 0.172, 0.178, 0.1855, 0.1888, 0.1914, 0.1910, 0.1948, 0.1957]
    assert _lr_scales(ml100k, defaults.min_epochs, 0.5) == [1.0] * 10 + [0.5, 0.5]
    food = [0.0125, 0.0114, 0.0122, 0.0129, 0.0141, 0.0167, 0.0160, 0.0170, 0.0165, 0.0150]
    # the first epochs' dip leaves the rate alone; after min_epochs each epoch without a gain halves it
    assert _lr_scales(food, defaults.min_epochs, 0.5) == [1.0] * 7 + [0.5, 0.5, 0.25]
    assert _lr_scales(food, defaults.min_epochs, defaults.lr_plateau) == [1.0] * 10  # the default: constant
