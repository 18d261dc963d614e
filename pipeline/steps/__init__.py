"""The build's steps as plain functions, one module per step of flows/build_corpus.py.

- `paths`: every place a build reads or writes, resolved once (absolute paths or URLs), and the work URL.
- `partitions`: read, clean, segment, filter and fingerprint one partition into a staging directory.
- `dedup_step`: exact and near duplicates across every partition (and the previous version): bucket tasks
  over key ranges, then one resolution over the colliding documents.
- `writing`: one task per partition (or run of small ones) writes its shards and rejects; validation tasks
  check them in batches of shards of one contract.
- `manifest`: contract results, the manifest and its version id, accounting and limits.

Each takes and returns small records (paths and counts), never data, so it can run in another process or
on another machine. (Not named `build`: tools take a folder of that name for build output.)
"""
