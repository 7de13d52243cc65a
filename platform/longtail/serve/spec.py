"""What the Serve builder resolves before any replica starts, without Ray: the bundle version, the store,
the metrics directory, the auth sources and the limits, as one ``ReplicaSpec``.

A bad bundle, a missing store or an unusable token fails the deploy here, with a message, instead of
crash-looping replicas.
"""

from __future__ import annotations

import os
from pathlib import Path

from longtail.bundle import BundleError, read_manifest
from longtail.serve.api import Limits
from longtail.serve.auth import AuthSources, load_tokens
from longtail.serve.knobs import AppArgs, ReplicaSpec
from longtail.store import Retention, Tracking, is_postgres, open_store

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
    if args.bundle_version and read_manifest(path).version != args.bundle_version:
        base = given.name.split("@", 1)[0]
        path = (given.parent / f"{base}@{args.bundle_version}").resolve()
        if not path.is_dir():
            known = sorted(p.name for p in given.parent.glob(f"{base}@*"))
            raise BundleError(
                f"{given}: no version {args.bundle_version!r} beside it; versions there: {known}"
            )
    manifest = read_manifest(path)
    if args.bundle_version and manifest.version != args.bundle_version:
        raise BundleError(f"{path}: holds version {manifest.version}, not {args.bundle_version}")
    return path


def resolve_store(args: AppArgs) -> str:
    """The store's location as every replica must see it (absolute path, or the URL), checked to exist here
    (or created, with ``create_store``) so a wrong path fails the deploy instead of serving an empty store."""
    spec = args.store
    if not is_postgres(spec):
        spec = str(Path(spec).expanduser().resolve())
    open_store(spec, create=args.create_store, timeout_s=args.store_timeout_s)
    return spec


def metrics_directory(args: AppArgs, store: str) -> str:
    if args.metrics_dir:
        return str(Path(args.metrics_dir).expanduser().resolve())
    if is_postgres(store):
        return str(Path("state/longtail.metrics").resolve())
    return str(Path(store).with_suffix(".metrics"))


def auth_sources(args: AppArgs) -> AuthSources:
    """Where replicas find their tokens: the args, token files made absolute here."""

    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else None

    return AuthSources(
        args.auth,
        args.token_env,
        absolute(args.token_file),
        args.read_token_env,
        absolute(args.read_token_file),
        args.protect_reads,
    )


def check_auth_config(args: AppArgs, sources: AuthSources) -> None:
    """Fail the deploy at once when ``auth: token`` names no token source, or a token file that is readable
    here holds a bad token. (An env var unset where the app is built may be set where replicas run: each
    replica checks again and refuses to start without a token.)"""
    if args.auth == "none":
        return
    if not args.token_env and not args.token_file:
        raise ValueError(
            "auth: token, but neither token_env nor token_file is set; name one, or `auth: none`"
        )
    for name, file in (("token_file", sources.token_file), ("read_token_file", sources.read_file)):
        if file and not Path(file).is_file():
            raise ValueError(
                f"{name} {file}: no such file where the app is built; create it (a random token), or "
                "point it at the secret's mount"
            )
    if sources.token_file:
        load_tokens(
            AuthSources(
                sources.auth, None, sources.token_file, None, sources.read_file, sources.protect_reads
            )
        )


def replica_spec(args: AppArgs) -> ReplicaSpec:
    """What every replica is built from, resolved and checked here (a bad bundle, store or token fails the
    deploy with a message instead of crash-looping replicas)."""
    bundle = str(resolve_bundle(args))
    store = resolve_store(args)
    sources = auth_sources(args)
    check_auth_config(args, sources)
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_body_messages=args.max_body_messages,
        max_clock_skew_s=args.max_clock_skew_s,
    )
    keep_days = args.impressions_keep_days
    return ReplicaSpec(
        bundle=bundle,
        store=store,
        metrics_dir=metrics_directory(args, store),
        store_timeout_s=args.store_timeout_s,
        store_threads=args.store_threads,
        torch_threads=args.torch_threads,
        auth=sources,
        limits=limits,
        retention=Retention(args.events_per_user, args.max_stored_items),
        tracking=Tracking(
            window_s=args.attribution_window_s,
            match_unlabelled=args.attribute_unlabelled,
            keep_s=None if keep_days is None else keep_days * 86_400.0,
        ),
        record_impressions=args.record_impressions,
    )
