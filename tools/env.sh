# Environment for running the stages by hand: `source tools/env.sh`.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VK_ICD_FILENAMES="${VK_ICD_FILENAMES:-$_root/.cache/mesa/lvp_icd.json}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export WANDB_MODE="${WANDB_MODE:-offline}"
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$_root/.venv/bin:$PATH"
