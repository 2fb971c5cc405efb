"""A blind baseline for membership inference (Das et al. 2024, "Blind Baselines Beat Membership
Inference Attacks for Foundation Models"): a classifier that never sees the model, only the texts.
If it tells members from non-members, the two sets differ in distribution (time, topic, format),
and a membership attack's AUC may measure that difference instead of memorization. A data dir's
held-out texts are drawn like its members, so there it should sit near 0.5; an audit file with
non-members from elsewhere is where it earns its keep."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

FOLDS = 5


def blind_scores(texts: list[str], members: list[bool], seed: int) -> list[float] | None:
    """Each text's out-of-fold probability of being a member under a bag-of-words (word 1- and
    2-gram counts) logistic regression fitted on the other folds (stratified, shuffled with
    `seed`), so no text is scored by a classifier that saw it. None when either class has fewer
    than two texts or the texts have no words."""
    labels = np.array(members, dtype=bool)
    smallest = int(min(labels.sum(), (~labels).sum()))
    if smallest < 2:
        return None
    folds = StratifiedKFold(n_splits=min(FOLDS, smallest), shuffle=True, random_state=seed)
    classifier = make_pipeline(CountVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000))
    try:
        scores = cross_val_predict(classifier, texts, labels, cv=folds, method="predict_proba")
    except ValueError:  # "empty vocabulary": texts without a single word
        return None
    return [float(s) for s in scores[:, 1]]
