"""`python -m c2f_exp.cache --gc ...`: the documented command; the code is in core/cache."""

from c2f_exp.core.cache import main

if __name__ == "__main__":
    raise SystemExit(main())
