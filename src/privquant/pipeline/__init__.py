"""From data to signals to report: training populations of models and querying them."""

from privquant.pipeline.population import collect_signals, query_views, train_population

__all__ = ["collect_signals", "query_views", "train_population"]
