"""Which candidate next, and everything around a study: study files, the Optuna x Ray
engine, results and Pareto front, report, pick/export, CLI."""

from vitsearch.search.results.variant import Variant, load_variant

__all__ = ["Variant", "load_variant"]
