"""Fine-tuning on real local Ray: DeepSpeed ZeRO 0/1/2 with 2 gloo workers, checkpoint and resume after a
worker dies, and Ray Data embedding that matches single-process embedding."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from longtail.config import TrainConfig
from longtail.data.vectors import vectors_of
from longtail.model.encoder import embed_texts, load_encoder, load_tokenizer
from longtail.train.embed import embed_catalog
from longtail.train.finetune import finetune
from longtail.train.finetune_worker import FaultInjection
from tests.conftest import clustered_split

pytestmark = pytest.mark.integration


def tiny_config(encoder_dir, storage, **finetune) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "encoder": {"name": str(encoder_dir), "max_length": 16},
            "finetune": {
                "enabled": True,
                "epochs": 1,
                "pairs_per_epoch": 64,
                "micro_batch_size": 8,
                "lr": 1e-3,
                **finetune,
            },
            "resources": {
                "num_workers": 2,
                "cpus_per_worker": 0.5,
                "storage_path": str(storage),
                "max_failures": 1,
            },
        }
    )


@pytest.mark.parametrize("stage", [0, 2])  # stage 1: the killed-worker test below
def test_zero_stages_train_and_write_a_consolidated_encoder(ray_cluster, tiny_encoder, tmp_path, stage):
    data = clustered_split()
    cfg = tiny_config(tiny_encoder, tmp_path / "runs", zero_stage=stage)
    result = finetune(data, cfg, tmp_path / "encoder", run_name=f"zero{stage}")
    assert result.metrics["micro_step"] == 4  # 64 pairs / (2 workers × 8)
    assert np.isfinite(result.metrics["valid_loss"]) and result.metrics["samples_per_s"] > 0
    files = {p.name for p in (tmp_path / "encoder").iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".pt", ".bin")) for f in files)
    before = load_encoder(str(tiny_encoder)).backbone.state_dict()
    after = load_encoder(str(tmp_path / "encoder")).backbone.state_dict()
    changed = [k for k in before if not np.allclose(before[k].numpy(), after[k].numpy())]
    assert changed, "fine-tuning did not change any weight"


def test_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, tiny_encoder, tmp_path):
    data = clustered_split()
    cfg = tiny_config(tiny_encoder, tmp_path / "runs", zero_stage=1, epochs=2, checkpoint_every=2)
    marker = tmp_path / "died"
    fault = FaultInjection(at_step=5, rank=1, marker=str(marker))
    result = finetune(data, cfg, tmp_path / "encoder", run_name="faulty", fault=fault)
    assert marker.read_text() == "5"  # rank 1 really died at micro-step 5, on the first attempt only
    # the restart loaded a checkpoint (micro-step 4, or 2 when the death beat the registration of 4)
    assert result.metrics["resumed_from"] in (2, 4)
    assert result.metrics["micro_step"] == 8  # and finished the run instead of starting over
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    before = load_encoder(str(tiny_encoder)).backbone.state_dict()
    after = load_encoder(str(tmp_path / "encoder")).backbone.state_dict()  # ZeRO-1, consolidated
    assert any(not np.allclose(before[k].numpy(), after[k].numpy()) for k in before)


def test_ray_data_embedding_equals_single_process(ray_cluster, tiny_encoder, tmp_path):
    data = clustered_split()
    cfg = TrainConfig.model_validate({"embed": {"actors": 2, "batch_size": 3, "cpus_per_actor": 0.5}})
    table = embed_catalog(
        data.item_ids, data.item_text, str(tiny_encoder), 16, cfg.embed, tmp_path / "v.parquet"
    )
    assert table.column("item_id").to_pylist() == list(data.item_ids)
    reference = embed_texts(
        load_encoder(str(tiny_encoder)), load_tokenizer(str(tiny_encoder)), list(data.item_text), 16
    )
    assert np.abs(vectors_of(pq.read_table(tmp_path / "v.parquet")) - reference).max() < 1e-5
