"""Fine Actor merging (DESIGN §2.2): pure merge math (`methods`), streaming safetensors I/O
(`io`, `stream`) and the `merger` config schema (`config`).

Kept import-free so that `c2f_exp.config` can import `merging.config.MergerConf` without
loading torch.
"""
