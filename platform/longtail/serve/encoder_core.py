"""What one encoder replica holds and does, without Serve: the bundle's text encoder, for new items and
free-text queries, and the backfill of stored items that lack a vector from it.

Items added while another bundle was served (mid-rollout, through the old encoder) have no vector from this
bundle's encoder, so this bundle's rankers cannot show them. The encoder encodes them at start and then,
while it runs, every ``BACKFILL_EVERY_S`` seconds from a background thread of its own (not inside a user's
request), so such an item becomes recommendable within seconds whether or not anyone calls the encoder.
Encoding (requests and backfill alike) runs in one thread, one batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from longtail.bundle import read_manifest
from longtail.store import Store

log = logging.getLogger("longtail.serve")
BACKFILL_EVERY_S = 5.0


class EncoderCore:
    """The bundle's encoder on this replica's device, and its backfill of the store's items."""

    def __init__(self, bundle: Path, store: Store) -> None:
        from longtail.model.encoder import load_encoder, load_tokenizer

        manifest = read_manifest(Path(bundle))
        self.encoder_id = manifest.encoder_id
        self.max_length = manifest.config.encoder.max_length
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = load_encoder(str(Path(bundle) / "encoder")).to(self.device).eval()
        self.tokenizer = load_tokenizer(str(Path(bundle) / "encoder"))
        self.store = store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="longtail-encoder")
        self._stop = threading.Event()
        self._backfiller: threading.Thread | None = None
        self.backfill_sync()

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), d) unit vectors."""
        from longtail.model.encoder import embed_texts

        return embed_texts(
            self.encoder, self.tokenizer, texts, self.max_length, max(len(texts), 1), self.device
        )

    async def encode_async(self, texts: list[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self.encode, texts)

    def backfill_sync(self, chunk: int = 256) -> int:
        """Vectors from this encoder for stored items that lack one; returns how many were added."""
        missing = self.store.items_missing_vectors(self.encoder_id)
        added = 0
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            vectors = self.encode([text for _, text in part])
            added += self.store.add_vectors(
                self.encoder_id, dict(zip((i for i, _ in part), vectors, strict=True))
            )
            log.info(
                "encoder %s: %d/%d stored items encoded", self.encoder_id, start + len(part), len(missing)
            )
        return added

    def start_backfill(self, every_s: float = BACKFILL_EVERY_S) -> None:
        """Backfill every ``every_s`` seconds from a daemon thread until ``stop`` (idempotent)."""
        if self._backfiller is None or not self._backfiller.is_alive():
            self._stop.clear()
            self._backfiller = threading.Thread(
                target=self._backfill_loop, args=(every_s,), daemon=True, name="longtail-backfill"
            )
            self._backfiller.start()

    def _backfill_loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self._thread.submit(self.backfill_sync).result()
            except Exception:  # a store outage: try again next round, never end the loop
                log.warning(
                    "encoder %s: backfill failed; retrying in %.0f s", self.encoder_id, every_s, exc_info=True
                )

    def stop(self) -> None:
        self._stop.set()
