"""The Serve application builder: ``import_path: longtail.serve.app:build_app`` in serve_configs/*.yaml.

    serve run serve_configs/ranker.yaml               # local, CPU
    LONGTAIL_BUNDLE=/path/to/bundle serve run serve_configs/ranker.yaml
    serve deploy serve_configs/ranker.yaml            # on a running cluster; re-deploy to change knobs

Deployment options (replicas, autoscaling, resources) and run-time knobs (``user_config``) come from the
config file's ``deployments:`` list, by deployment name: Ingress, Ranker, Encoder.
(No ``from __future__ import annotations`` here: Serve reads the builder's ``AppArgs`` type at run time.)
"""

from ray.serve import Application

from longtail.serve.deployments import Encoder, Ranker
from longtail.serve.ingress import Ingress
from longtail.serve.knobs import AppArgs
from longtail.serve.spec import replica_spec


def build_app(args: AppArgs) -> Application:
    """Ingress → (Ranker, Encoder), all reading the same bundle version and store; with
    ``ranker_deployment: false`` there is no Ranker deployment: each Ingress replica ranks in-process.

    Serve validates ``args`` against ``AppArgs`` from this signature (unknown keys fail the deploy).
    """
    args = AppArgs.model_validate(args) if isinstance(args, dict) else args
    spec = replica_spec(args)
    ranker = Ranker.bind(spec) if args.ranker_deployment else None
    return Ingress.bind(ranker, Encoder.bind(spec), spec)
