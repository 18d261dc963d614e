"""Model side: tokenizer training, pretraining on packed shards, fine-tuning, evaluation."""
