"""retrieve → rank → arrange: the one recommendation path of evaluation, batch jobs and Serve (no Ray)."""

import logging

logging.getLogger("faiss.loader").setLevel(
    logging.WARNING
)  # its "no AVX512 build, using AVX2" notes are not news
