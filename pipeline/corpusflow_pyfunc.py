"""What `mlflow.pyfunc.load_model` runs for a registered task model: `_load_pyfunc(<the model folder>)`.

Every registered version is a `save_pretrained` folder that is also an MLflow model: its `MLmodel` names
this module as the python_function loader, with no data path, so MLflow hands over the folder itself, and a
copy of this file travels in the folder's `code/` directory (imported there as the top-level module
`corpusflow_pyfunc`). It therefore imports nothing from corpusflow: a model loads where torch, transformers,
pandas and mlflow are installed, with the code it was registered with.

Why a python_function over the saved folder, not MLflow's `transformers` flavor: the flavor moves the weights
to `model/` and the tokenizer to `components/tokenizer/` inside the version, so the folder would no longer
load with `AutoModel*.from_pretrained` at its root; and its python_function turns a token-classification
pipeline's entities into one comma-joined string per text, losing the spans and the scores.

Input: texts (a list, a Series, or a one-column DataFrame, as MLflow's schema enforcement passes them).
Output: sequence classification, a DataFrame with `label` (the class name) and `score` per text; token
classification, per text a list of entity spans `{entity, text, start, end, score}` (character offsets).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
from transformers import pipeline as hf_pipeline

BATCH_SIZE = 32
# Long texts are tagged in overlapping windows of the model's length; this many tokens of each window
# repeat the previous one, so an entity cut by a window edge is seen whole in the next.
WINDOW_OVERLAP_TOKENS = 16


class TextClassifier:
    """A sequence-classification model: one class name and its probability per text."""

    def __init__(self, model_dir: str) -> None:
        self.pipeline = _pipeline("text-classification", AutoModelForSequenceClassification, model_dir)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        texts = _texts(model_input)
        # truncation at the tokenizer's model_max_length: the length the model was fine-tuned at (see _pipeline)
        results = self.pipeline(texts, truncation=True, batch_size=BATCH_SIZE) if texts else []
        return pd.DataFrame({"label": [r["label"] for r in results], "score": [float(r["score"]) for r in results]})


class EntityTagger:
    """A token-classification (BIO) model: the entity spans of each text, with character offsets."""

    def __init__(self, model_dir: str) -> None:
        self.pipeline = _pipeline("token-classification", AutoModelForTokenClassification, model_dir)
        max_tokens = self.pipeline.tokenizer.model_max_length
        self.stride = min(WINDOW_OVERLAP_TOKENS, max_tokens // 4)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        texts = _texts(model_input)
        # "first": a word takes the tag of its first sub-token, the token that carried its tag in fine-tuning
        results = [self.pipeline(text, aggregation_strategy="first", stride=self.stride) if text.strip() else []
                   for text in texts]
        return [[_span(text, entity) for entity in entities] for text, entities in zip(texts, results)]


def _load_pyfunc(model_dir: str) -> TextClassifier | EntityTagger:
    architectures = AutoConfig.from_pretrained(model_dir).architectures or []
    if any(name.endswith("ForTokenClassification") for name in architectures):
        return EntityTagger(model_dir)
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return TextClassifier(model_dir)
    raise ValueError(f"{model_dir}: config.json names {architectures}, neither a sequence nor a token classifier")


def _pipeline(task: str, auto_class: Any, model_dir: str) -> Any:
    model = auto_class.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # fine-tuning saves the length it trained at; a tokenizer without one must still stop at the model's positions
    tokenizer.model_max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    device = 0 if torch.cuda.is_available() else -1
    return hf_pipeline(task, model=model, tokenizer=tokenizer, device=device)


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] != 1:
            raise ValueError(f"expected one column of texts, got columns {list(model_input.columns)}")
        model_input = model_input.iloc[:, 0]
    if isinstance(model_input, str):
        return [model_input]
    return ["" if text is None else str(text) for text in list(model_input)]


def _span(text: str, entity: dict[str, Any]) -> dict[str, Any]:
    # the span is cut from the text: the pipeline's `word` is decoded tokens (spaces between CJK characters)
    start, end = int(entity["start"]), int(entity["end"])
    return {"entity": entity["entity_group"], "text": text[start:end], "start": start, "end": end,
            "score": float(entity["score"])}
