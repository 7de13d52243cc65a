"""The fit's validation lists: every worker ranks a share of the users and rank 0 gets them back whole, in
order, from two real gloo processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from longtail.train.collective import gather_rows

USERS = np.arange(7 * 20, dtype=np.int64).reshape(7, 20)  # 7 users' lists: shares of 4 and 3 rows


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        shares = np.array_split(USERS, world)
        got = gather_rows(shares[rank], [len(s) for s in shares], torch.device("cpu"))
        np.save(Path(out) / f"rank{rank}.npy", np.array([]) if got is None else got)
    finally:
        dist.destroy_process_group()


def test_rank_0_gets_every_workers_rows_in_order_and_the_others_get_none(tmp_path):
    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    np.testing.assert_array_equal(np.load(tmp_path / "rank0.npy"), USERS)  # the unequal shares unpadded
    assert np.load(tmp_path / "rank1.npy").size == 0
