#!/usr/bin/env bash
# Optional: Google Research Football (the `football` extra and the gfootball engine) for sb3_ncdpo.football.
# Debian / Ubuntu, from the repository root, inside the virtualenv the README's commands use. The engine is C++ built
# from gfootball's PyPI sdist: ~9 CPU-minutes (measured from a fresh clone).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
# The engine's build dependencies (gfootball's own list, without its rendering-only tools).
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends cmake build-essential libgl1-mesa-dev libsdl2-dev \
    libsdl2-image-dev libsdl2-ttf-dev libsdl2-gfx-dev libboost-all-dev libdirectfb-dev
pip install torch==2.13.0
PIP_CONSTRAINT=constraints.txt pip install -e ".[football]"
# gfootball's build script imports psutil, which pip's isolated build environment lacks: build in this environment
# (the extra installed psutil, setuptools and wheel).
PIP_CONSTRAINT=constraints.txt pip install --no-build-isolation "gfootball==2.10.2"
python -c "import gfootball.env; from sb3_ncdpo.football import FootballParallelEnv; FootballParallelEnv().reset(seed=0)"
echo "Google Research Football installed"
