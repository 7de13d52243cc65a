"""What `longtail eval --bundle` reports is what Serve serves: for the same histories and knobs the
evaluation's
lists and the serving replica's lists are the same lists, shelves and popularity terms included."""

from __future__ import annotations

import numpy as np
import pytest

from longtail.bundle import read_bundle
from longtail.data.encoded import load_split_data
from longtail.eval.evaluate import history_parts
from longtail.recommend.arrange import Shelves
from longtail.recommend.build import load_pipeline, popularity_penalty_of
from longtail.recommend.recommender import PipelineRecommender
from longtail.serve.knobs import ListKnobs
from longtail.serve.live import LivePipeline, Query
from tests.conftest import write_clustered_dataset


@pytest.fixture(scope="module")
def boosted_bundle(tmp_path_factory, tiny_encoder):
    """A bundle whose recorded choice has a tail boost and shelves (Serve used to reset the boost to 0), the
    tail shelf ordered with the item-kNN affinity."""
    from tests.conftest import write_tiny_bundle

    rerank = {
        "tail_boost": 0.4,
        "tail_share": 0.2,
        "new_share": 0.1,
        "exposure_penalty": 0.25,
        "tail_knn": 1.0,
    }
    out = tmp_path_factory.mktemp("boosted") / "b"
    return write_tiny_bundle(out, tiny_encoder, rerank=rerank, neighbours=True)


@pytest.mark.parametrize(
    ("which", "shelves"),
    [("tiny_bundle", None), ("tiny_bundle", Shelves(0.3, 0.1, 0.5)), ("boosted_bundle", None)],
    ids=["as trained", "knobs", "boosted"],
)
def test_eval_lists_equal_the_serving_replicas_lists(which, shelves, tmp_path, request):
    path = request.getfixturevalue(which)
    bundle = read_bundle(path)
    data = load_split_data(
        write_clustered_dataset(tmp_path / "data"), bundle.config.split, bundle.config.events
    )
    users = np.unique(data.part("test").users)
    histories = data.histories(history_parts("test"))  # train + valid: what the bundle's histories hold
    pipe = load_pipeline(bundle)
    live = LivePipeline(read_bundle(path))
    if shelves is not None:  # the same knobs on both sides: shelves, and a popularity adjustment γ
        pipe = pipe.with_knobs(
            shelves=shelves, popularity_penalty=popularity_penalty_of(bundle.config.ranker, 0.5)
        )
        live.configure(
            ListKnobs(
                tail_share=shelves.tail_share,
                new_share=shelves.new_share,
                exposure_penalty=shelves.exposure_penalty,
                popularity_adjustment=0.5,
            )
        )
    evaluated = PipelineRecommender(pipe).recommend(users, histories.rows(users), 10)
    served = []
    for (
        user
    ) in users:  # one request at a time, in the evaluation's order (the shelves' exposure counts agree)
        user_id = str(data.user_ids[user])
        history, strengths, known = live.weighted_history(user_id, False, [])
        assert known and [live.item_ids[i] for i in history] == [
            str(data.item_ids[i]) for i in histories.of(user)
        ]
        (ranked,) = live.recommend([Query(user_id, history, 10, strengths=strengths)])
        served.append([item["item_id"] for item in ranked.items])
    assert served == [[str(data.item_ids[i]) for i in row if i >= 0] for row in evaluated]


def test_the_unmasked_protocol_lists_seen_items_again_and_the_masked_one_never(tiny_bundle, tmp_path):
    from longtail.recommend.recommender import RetrieverRecommender

    bundle = read_bundle(tiny_bundle)
    data = load_split_data(write_clustered_dataset(tmp_path / "data"), bundle.config.split)
    users = np.unique(data.part("test").users)
    histories = data.histories(history_parts("test")).rows(users)
    seen = [set(histories.of(row).tolist()) for row in range(len(users))]
    pipe, k = load_pipeline(bundle), data.n_items  # k = the whole catalog: every seen item fits
    for make in (PipelineRecommender, RetrieverRecommender):
        masked = make(pipe).recommend(users, histories, k)
        unmasked = make(pipe, exclude_seen=False).recommend(users, histories, k)
        assert not any(s & set(row.tolist()) for s, row in zip(seen, masked, strict=True))
        assert all(s <= set(row.tolist()) for s, row in zip(seen, unmasked, strict=True))
