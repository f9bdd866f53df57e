"""The `merge` stage: Knowledge Residue Merger -> the Fine Actor (docs/method.md §2.2):
pure merge math (`methods`), streaming safetensors I/O (`io`, `stream`, `output`) and the
`merger` config schema (`config`).

Kept import-free so that `c2f_exp.config` can import `merge.config.MergerConf` without
loading torch.
"""
