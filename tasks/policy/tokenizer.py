"""The PaliGemma tokenizer that openpi's pi0 needs, and an offline stand-in for tests and the demo.

openpi loads `gs://big_vision/paligemma_tokenizer.model` through its download cache
(`$OPENPI_DATA_HOME/big_vision/paligemma_tokenizer.model`, default `~/.cache/openpi`). Users keep that
real path: with network access openpi fetches it once; on an air-gapped machine it can be copied there.

Tests and the offline demo have neither, so `seed_offline_tokenizer` trains a tiny SentencePiece model on
the task prompts and writes it to that cache path. It is only for models trained from scratch with it
(the tiny preset): its token ids mean nothing to pretrained pi0 weights, so it is never written into a
user's default cache — the caller must point `OPENPI_DATA_HOME` somewhere private first.

CLI: `python -m tasks.policy.tokenizer --seed-offline` (with OPENPI_DATA_HOME set).
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

from tasks.core.checks import GCS_HOST, unreachable
from tasks.core.errors import NotRetryable

TOKENIZER_REL = Path("big_vision") / "paligemma_tokenizer.model"
OFFLINE_MARKER = "offline-stand-in.txt"


class TokenizerError(NotRetryable):
    """The tokenizer is not in openpi's cache and cannot be fetched."""


def cache_dir() -> Path:
    return Path(os.environ.get("OPENPI_DATA_HOME", "~/.cache/openpi")).expanduser().resolve()


def tokenizer_path() -> Path:
    return cache_dir() / TOKENIZER_REL


# Set only by tools/gpu_check.sh, which trains and evaluates lora from random weights on a machine that may have no
# internet: there the token ids mean nothing anyway, and the figures measured (time, memory) do not depend on them.
STAND_IN_FOR_RANDOM_WEIGHTS_ENV = "PIPELINE_STAND_IN_TOKENIZER_FOR_RANDOM_WEIGHTS"


def is_offline_stand_in() -> bool:
    """The cache holds the offline stand-in (and no measurement on random weights has said it is fine)."""
    if os.environ.get(STAND_IN_FOR_RANDOM_WEIGHTS_ENV) == "1":
        return False
    return (tokenizer_path().parent / OFFLINE_MARKER).is_file()


def seed_offline_tokenizer(vocab_size: int = 400) -> Path:
    """Writes a small SentencePiece model trained on the registered task prompts to openpi's cache path."""
    import sentencepiece as spm

    from tasks.core.specs import TASK_SPECS

    if "OPENPI_DATA_HOME" not in os.environ:
        raise TokenizerError(
            "refusing to seed the offline tokenizer into the default ~/.cache/openpi: set OPENPI_DATA_HOME "
            "to a private directory first (the stand-in must never shadow the real PaliGemma tokenizer)"
        )
    path = tokenizer_path()
    if path.is_file():
        return path
    corpus = [spec.prompt for spec in TASK_SPECS.values()]
    # Enough varied text for SentencePiece to fill the vocabulary; digits and punctuation for pi0-FAST prompts.
    corpus += ["Action: " + " ".join(str(i) for i in range(k, k + 40)) + " |" for k in range(0, 256, 8)]
    corpus += ["Task: pick up the cube, State: 1 2 3;\n", "move the red cube to the green goal", "stack the blocks"]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 20),
        model_writer=model,
        vocab_size=vocab_size,
        character_coverage=1.0,
        model_type="bpe",
        byte_fallback=True,
        bos_id=2,
        eos_id=1,
        pad_id=0,
        unk_id=3,
        minloglevel=2,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(model.getvalue())
    tmp.replace(path)
    (path.parent / OFFLINE_MARKER).write_text("tasks.policy.tokenizer offline stand-in, not the PaliGemma tokenizer\n")
    return path


def ensure_tokenizer(timeout_s: float = 5.0) -> Path:
    """Fails fast, naming the fix, when openpi would otherwise hang trying to reach Google Cloud Storage."""
    path = tokenizer_path()
    if path.is_file():
        return path
    if (e := unreachable(GCS_HOST, timeout_s=timeout_s)) is not None:
        raise TokenizerError(
            f"the PaliGemma tokenizer is not in openpi's cache ({path}) and {GCS_HOST} is unreachable ({e}). "
            f"Copy paligemma_tokenizer.model to {path}, or for the offline tiny preset run "
            "`OPENPI_DATA_HOME=<private dir> python -m tasks.policy.tokenizer --seed-offline`"
        ) from e
    return path  # openpi downloads it on first use


def main(argv: list[str] | None = None) -> int:
    from tasks.core.cli import configure_logging, first_paragraph

    configure_logging()
    parser = argparse.ArgumentParser(prog="python -m tasks.policy.tokenizer", description=first_paragraph(__doc__))
    parser.add_argument(
        "--seed-offline",
        action="store_true",
        help="write the offline stand-in to $OPENPI_DATA_HOME (default: make sure the real tokenizer "
        "is in openpi's cache, downloading it if needed)",
    )
    args = parser.parse_args(argv)
    print(seed_offline_tokenizer() if args.seed_offline else ensure_tokenizer())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
