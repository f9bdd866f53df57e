"""`python -m c2f_exp.compare <dir>...`: the documented command (code: analysis/compare.py)."""

from c2f_exp.analysis.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
