"""What tests share and that holds no tests: fixtures written by hand, in the real formats.

- `versions`: small dataset versions written the way the build writes them (shards, ledger, manifest).
- `training`: generated shards and manifests, and small training configs, for the model side.
- `tasks`: labelled task files and a tiny pretrained encoder for fine-tuning, evaluation and the registry.
- `inputs`: field inputs, good and bad (a glob of files, broken ones, WARC pages).
- `sources`: building a source and reading every partition of it into rows.
"""
