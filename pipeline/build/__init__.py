"""The build's steps as plain functions, one module per step of flows/build_corpus.py.

- `partitions`: read, clean, segment, filter and fingerprint one partition into a staging directory.
- `dedup_step`: find exact and near duplicates across every partition (and the previous version).
- `assembly`: write kept documents into split/source/lang shards and every drop into rejects shards.
- `manifest`: provenance, contract results, the manifest and its version id, accounting and limits.

Each takes and returns small records (paths and counts), never data, so it can run in another process or
on another machine.
"""
