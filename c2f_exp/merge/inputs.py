"""Checks on the merge inputs that headers and shapes (stream.check_inputs) cannot catch, run
at the merge stage's preflight: a merged model without a tokenizer, a zero residue."""

from __future__ import annotations

from c2f_exp.merge.io import MergeError, ModelDir

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "tekken.json")


def check_tokenizer(md: ModelDir) -> None:
    """The merged model copies its tokenizer from the instruct model: without one, the output
    could be neither evaluated nor served, so this is refused at preflight."""
    if not any((md.path / f).is_file() for f in TOKENIZER_FILES):
        raise MergeError(
            f"{md.key}={md.path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); the "
            f"merged model takes its tokenizer from {md.key}: point it at a complete model dir"
        )


def check_residue_possible(base: ModelDir, coarse: ModelDir) -> None:
    """coarse == base (one directory, or identical weights) makes the residue zero: the merge
    would return the instruct model unchanged, with exit 0. Refused at preflight."""
    same = base.path.resolve() == coarse.path.resolve()
    if same or base.fingerprint() == coarse.fingerprint():
        how = "the same directory as" if same else "identical weights to"
        raise MergeError(
            f"merger.coarse={coarse.path} is {how} merger.base={base.path}: the residue "
            "coarse - base is zero and the merge would return instruct unchanged; point "
            "merger.coarse at the Coarse Actor (<coarse artifact>/actor)"
        )
