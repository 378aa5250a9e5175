"""Classification methods, one module each, behind the `Classifier` protocol."""

from .base import Classification, Classifier
from .keyword import KeywordClassifier

__all__ = ["Classification", "Classifier", "KeywordClassifier"]
