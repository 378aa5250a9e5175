"""Classification methods, one module each, behind the `Classifier` protocol."""

from .base import Caller, Classification, Classifier
from .keyword import KeywordClassifier

__all__ = ["Caller", "Classification", "Classifier", "KeywordClassifier"]
