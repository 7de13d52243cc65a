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
from longtail.serve.http import load_tokens
from longtail.serve.ingress import Ingress
from longtail.serve.knobs import AppArgs
from longtail.serve.store import open_store

BUNDLE_ENV = "LONGTAIL_BUNDLE"


def resolve_bundle(args: AppArgs) -> Path:
    """The bundle version to serve: $LONGTAIL_BUNDLE when set, else ``args.bundle``, with its version symlink
    resolved here (every replica of this deploy reads that one immutable directory). With
    ``args.bundle_version`` the version ``<bundle>@<version>`` beside it is served instead, whatever the
    symlink points at: changing that one arg and `serve deploy`ing switches (or rolls back) a running app
    (re-deploying an unchanged config does nothing in Serve). Verified here, so a bad bundle fails the
    deploy with a clear message instead of crash-looping replicas."""
    chosen = os.environ.get(BUNDLE_ENV) or args.bundle
    if not chosen:
        raise BundleError(f"no bundle: set `bundle:` in the app's args or the {BUNDLE_ENV} env var")
    given = Path(chosen).expanduser().absolute()
    path = given.resolve()
    if args.bundle_version and verify_bundle(path)["version"] != args.bundle_version:
        base = given.name.split("@", 1)[0]
        path = (given.parent / f"{base}@{args.bundle_version}").resolve()
        if not path.is_dir():
            known = sorted(p.name for p in given.parent.glob(f"{base}@*"))
            raise BundleError(f"{given}: no version {args.bundle_version!r} beside it; versions there: {known}")
    manifest = verify_bundle(path)
    if args.bundle_version and manifest["version"] != args.bundle_version:
        raise BundleError(f"{path}: holds version {manifest['version']}, not {args.bundle_version}")
    return path


def resolve_store(args: AppArgs) -> str:
    """The store's location as every replica must see it (absolute path, or the URL), checked to exist here
    (or created, with ``create_store``) so a wrong path fails the deploy instead of serving an empty store."""
    spec = args.store
    if not spec.startswith(("postgresql://", "postgres://")):
        spec = str(Path(spec).expanduser().resolve())
    open_store(spec, create=args.create_store, timeout_s=args.store_timeout_s)
    return spec


def metrics_directory(args: AppArgs, store: str) -> str:
    if args.metrics_dir:
        return str(Path(args.metrics_dir).expanduser().resolve())
    if store.startswith(("postgresql://", "postgres://")):
        return str(Path("state/longtail.metrics").resolve())
    return str(Path(store).with_suffix(".metrics"))


def check_auth_config(args: AppArgs, auth: dict) -> None:
    """Fail the deploy at once when ``auth: token`` names no token source, or a token file that is readable
    here holds a bad token. (An env var unset where the app is built may be set where replicas run: each
    replica checks again and refuses to start without a token.)"""
    if args.auth == "none":
        return
    if not args.token_env and not args.token_file:
        raise ValueError("auth: token, but neither token_env nor token_file is set; name one, or `auth: none`")
    if auth["token_file"] and Path(auth["token_file"]).is_file():
        load_tokens(**{**auth, "token_env": None, "read_env": None})


def build_app(args: AppArgs) -> Application:
    """Ingress → (Ranker, Encoder), all reading the same bundle version and store; with
    ``ranker_deployment: false`` there is no Ranker deployment: each Ingress replica ranks in-process.

    Serve validates ``args`` against ``AppArgs`` from this signature (unknown keys fail the deploy).
    """
    args = AppArgs.model_validate(args) if isinstance(args, dict) else args
    bundle = str(resolve_bundle(args))
    store = resolve_store(args)
    metrics_dir = metrics_directory(args, store)
    auth = {"auth": args.auth, "token_env": args.token_env, "read_env": args.read_token_env,
            "protect_reads": args.protect_reads,
            "token_file": str(Path(args.token_file).expanduser().resolve()) if args.token_file else None,
            "read_file": str(Path(args.read_token_file).expanduser().resolve()) if args.read_token_file else None}  # fmt: skip
    check_auth_config(args, auth)
    ranker = Ranker.bind(bundle, store, args.store_timeout_s, metrics_dir, args.torch_threads) if args.ranker_deployment else None
    encoder = Encoder.bind(bundle, store, args.store_timeout_s, metrics_dir, args.torch_threads)
    return Ingress.bind(ranker, encoder, bundle, store, args.store_timeout_s, metrics_dir, auth, args.max_body_bytes,
                        args.torch_threads)  # fmt: skip
