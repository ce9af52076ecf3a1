"""Evaluation: ranking metrics, CTR estimators, intervals, slices, plots, the data-efficiency curve."""
