"""orch: MLPerf Inference BERT-99 across a whole cluster, one submission back."""

__version__ = "0.1.0"
