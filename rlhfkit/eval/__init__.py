"""Evaluation: the simulated gold annotator, the shipped prompt set, and win rates with bootstrap CIs."""
