"""Plots and the HTML report, built from files only (metrics.jsonl, eval JSON); never loads a model."""
