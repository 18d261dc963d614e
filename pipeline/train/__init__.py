"""Model side: tokenizer training, pretraining on packed shards, fine-tuning, evaluation."""

from pipeline.train.loading import quiet_progress_bars

quiet_progress_bars()
