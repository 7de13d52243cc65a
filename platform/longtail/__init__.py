"""longtail: surface the long tail of a recommender's catalog.

Pure core: ``longtail.data``, ``longtail.model``, ``longtail.eval``, ``longtail.config`` and
``longtail.bundle`` import no Ray, DeepSpeed, FastAPI or prometheus_client.
"""

__version__ = "0.1.0"
