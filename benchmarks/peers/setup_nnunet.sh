#!/usr/bin/env bash
# Set up nnU-Net v2 (2.8.x) on the CPU in its own virtual environment, for satnet's side-by-side
# benchmarks (docs/peers.md).
#
#   benchmarks/peers/setup_nnunet.sh                  # create or update the venv, install the trainers, check
#   benchmarks/peers/setup_nnunet.sh --trainers-only  # only (re)install the short-budget trainers, check
#
# NNUNET_VENV    where the venv goes (default $HOME/.cache/satnet-peers/nnunet-venv; outside the repo)
# NNUNET_SPEC    the nnU-Net release to install (default 'nnunetv2>=2.8,<2.9')
# PYTHON         the interpreter that creates the venv (default python3)
#
# Why it installs the way it does:
# 1. torch==2.13.0 first, from its own command: that is the CPU build on this machine's disk. A
#    range that admits a newer torch (nnunetv2 asks for torch>=2.1.2) would pull a multi-GB CUDA
#    build, so every later pip call runs with a constraints file that pins torch==2.13.0.
# 2. No timm, no torchvision. dynamic-network-architectures requires timm, timm requires
#    torchvision, and the torchvision wheels on PyPI (0.28.0 is the one built for torch 2.13.0) are
#    CUDA builds whose _C.so needs libtorch_cuda.so: beside the CPU torch, `import torchvision`
#    fails with "operator torchvision::nms does not exist". Only the Primus/EVA transformer
#    architectures use timm; nnU-Net's U-Nets never do. So nnunetv2 and
#    dynamic-network-architectures are installed with --no-deps and their other requirements are
#    installed from their own metadata, minus timm and torchvision.
# 3. The trainers go straight into nnunetv2/training/nnUNetTrainer/, not into variants/: nnU-Net
#    finds a trainer by importing the modules of that folder, then its subpackages in alphabetical
#    order, and `primus` (which imports timm) comes before `variants`. A module at the top level is
#    found before any subpackage is imported.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${NNUNET_VENV:-$HOME/.cache/satnet-peers/nnunet-venv}"
NNUNET_SPEC="${NNUNET_SPEC:-nnunetv2>=2.8,<2.9}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
TRAINER_MODULE="nnUNetTrainer_satnetPeers.py"
# Requirements never installed (see 2. above).
EXCLUDED="timm torchvision"

trainers_only=0
case "${1:-}" in
  "") ;;
  --trainers-only) trainers_only=1 ;;
  *) echo "setup_nnunet.sh: unknown argument '$1' (expected nothing or --trainers-only)" >&2; exit 2 ;;
esac

VPY="$VENV/bin/python"
# This machine's pip.conf lists local package folders that lack most names; pip warns for each one.
pip_install() {
  "$VPY" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is neither a file nor a directory" || true; }
}

if [[ $trainers_only == 0 ]]; then
  if [[ ! -x "$VPY" ]]; then
    echo "creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
  fi
  CONSTRAINTS="$VENV/satnet-peers-constraints.txt"
  echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

  echo "installing torch==$TORCH_VERSION (CPU build)"
  pip_install "torch==$TORCH_VERSION"

  echo "installing $NNUNET_SPEC without its dependencies"
  pip_install -c "$CONSTRAINTS" --no-deps "$NNUNET_SPEC"
  # dynamic-network-architectures at the range nnunetv2's own metadata asks for.
  dna_spec="$("$VPY" - <<'EOF'
from importlib.metadata import requires
print(next(r.split(";")[0].strip() for r in requires("nnunetv2")
           if r.lower().startswith("dynamic-network-architectures")))
EOF
)"
  echo "installing $dna_spec without its dependencies (it requires timm)"
  pip_install -c "$CONSTRAINTS" --no-deps "$dna_spec"

  # Every other requirement of both packages, from their metadata, minus extras and EXCLUDED.
  mapfile -t requirements < <(EXCLUDED="$EXCLUDED" "$VPY" - <<'EOF'
import os
import re
from importlib.metadata import requires

excluded = set(os.environ["EXCLUDED"].split()) | {"nnunetv2", "dynamic-network-architectures"}
seen = set()
for dist in ("nnunetv2", "dynamic-network-architectures"):
    for req in requires(dist) or []:
        spec, _, marker = req.partition(";")
        name = re.split(r"[<>=!~\s\[(]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")
        if "extra" in marker or name in excluded or spec in seen:
            continue
        seen.add(spec)
        print(spec.strip())
EOF
)
  echo "installing ${#requirements[@]} requirements with torch pinned to $TORCH_VERSION"
  pip_install -c "$CONSTRAINTS" "${requirements[@]}"
fi

if [[ ! -x "$VPY" ]]; then
  echo "setup_nnunet.sh: no venv at $VENV; run without --trainers-only first" >&2
  exit 1
fi

TRAINER_DIR="$("$VPY" -c 'import os, nnunetv2; print(os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer"))')"
cp "$HERE/nnunet_trainers.py" "$TRAINER_DIR/$TRAINER_MODULE"
echo "installed the trainers as $TRAINER_DIR/$TRAINER_MODULE"

echo "checking the environment"
"$VPY" - <<'EOF'
import importlib.util
import torch

from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

assert torch.__version__.startswith("2.13.0") and torch.version.cuda is None, torch.__version__
for name in ("timm", "torchvision"):
    assert importlib.util.find_spec(name) is None, f"{name} is installed; it breaks nnU-Net on this CPU torch"
for trainer in ("nnUNetTrainer", "nnUNetTrainer_satnetBudget", "nnUNetTrainer_satnetTiming"):
    recursive_find_trainer_class_by_name(trainer)
print(f"ok: torch {torch.__version__}, trainers found, no timm/torchvision")
EOF
for cmd in nnUNetv2_plan_and_preprocess nnUNetv2_train nnUNetv2_predict nnUNetv2_evaluate_folder; do
  "$VENV/bin/$cmd" -h > /dev/null
done
echo "ok: nnUNetv2_plan_and_preprocess, nnUNetv2_train, nnUNetv2_predict, nnUNetv2_evaluate_folder start"
echo "venv: $VENV"
