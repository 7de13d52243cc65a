"""Peer recommenders on longtail's splits and metric code (`python -m benchmarks.peers`)."""
