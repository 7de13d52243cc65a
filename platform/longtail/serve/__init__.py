"""Serving: the HTTP app (``api.create_app``) and the Ray Serve deployments that mount it.

    api.py          create_app(recommender, store, auth, limits) -> FastAPI: routes, validation, status codes
    auth.py guard.py   bearer tokens; body limits, metrics and version headers (pure ASGI)
    local.py        the app's recommender in one process (tests, uvicorn)
    live.py reader.py encoder_core.py   what a replica computes, without Serve
    ingress.py deployments.py app.py   the Serve Ingress, Ranker and Encoder, and the app builder
    knobs.py spec.py schemas.py   typed args and knobs, the app's Ray-free build helpers, HTTP bodies
    metrics.py pooled_store.py    Prometheus; store calls on a bounded pool
    impressions.py batching.py    served lists written behind the request path; batching without a fixed wait

The state store itself is ``longtail.store``.
"""
