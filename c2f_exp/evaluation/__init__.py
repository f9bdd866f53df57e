"""Evaluation: lm-eval suites, MT-Bench with pluggable judges, text statistics, the C2F report.

Heavy libraries (lm_eval, transformers, matplotlib) are imported inside the functions that use
them, so importing this package stays cheap.
"""
