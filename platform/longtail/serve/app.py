"""The Serve application builder: ``import_path: longtail.serve.app:build_app`` in serve_configs/*.yaml.

    serve run serve_configs/ranker.yaml               # local, CPU
    LONGTAIL_BUNDLE=/path/to/bundle serve run serve_configs/ranker.yaml
    serve deploy serve_configs/ranker.yaml            # on a running cluster; re-deploy to change knobs

Deployment options (replicas, autoscaling, resources) and run-time knobs (``user_config``) come from the
config file's ``deployments:`` list, by deployment name: Ingress, Ranker, Encoder.
(No ``from __future__ import annotations`` here: Serve reads the builder's ``AppArgs`` type at run time.)
"""

import os
from pathlib import Path

from ray.serve import Application

from longtail.bundle import BundleError, verify_bundle
from longtail.serve.deployments import Encoder, Ranker
from longtail.serve.ingress import Ingress
from longtail.serve.knobs import AppArgs

BUNDLE_ENV = "LONGTAIL_BUNDLE"


def resolve_bundle(args: AppArgs) -> Path:
    """The bundle to serve: $LONGTAIL_BUNDLE when set, else ``args.bundle``; verified here so a bad bundle
    fails the deploy with a clear message instead of crash-looping replicas."""
    chosen = os.environ.get(BUNDLE_ENV) or args.bundle
    if not chosen:
        raise BundleError(f"no bundle: set `bundle:` in the app's args or the {BUNDLE_ENV} env var")
    path = Path(chosen).expanduser().resolve()
    verify_bundle(path)
    return path


def build_app(args: AppArgs) -> Application:
    """Ingress → (Ranker, Encoder), all reading the same bundle and store.

    Serve validates ``args`` against ``AppArgs`` from this signature (unknown keys fail the deploy).
    """
    args = AppArgs.model_validate(args) if isinstance(args, dict) else args
    bundle = str(resolve_bundle(args))
    store = Path(args.store).expanduser().resolve()
    metrics_dir = str(Path(args.metrics_dir).expanduser().resolve() if args.metrics_dir else store.with_suffix(".metrics"))
    token_file = str(Path(args.token_file).expanduser().resolve()) if args.token_file else None
    ranker = Ranker.bind(bundle, str(store), metrics_dir, args.torch_threads)
    encoder = Encoder.bind(bundle, args.torch_threads)
    return Ingress.bind(ranker, encoder, bundle, str(store), metrics_dir, args.token_env, token_file,
                        args.max_body_bytes)  # fmt: skip
