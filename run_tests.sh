#!/usr/bin/env bash
# The test command from the README. It sets up the project-local virtual environment .venv/
# (created when missing, filled from requirements-dev.txt) and runs the whole suite in it.
# Chromium (Debian's package) drives the real-browser tests; it is installed when missing and
# this runs as root with apt-get available (as on CI), otherwise those tests report why they skip.
set -euo pipefail
cd "$(dirname "$0")"
. tools/venv.sh requirements-dev.txt
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
    || echo "warning: could not install chromium; browser tests will skip" >&2
fi
# Slurm (slurm-wlm) and munge for the tests on a real single-node cluster (tests/slurm_cluster.py
# starts it with tools/slurm_local.sh); installed the same way, else those tests say why they skip.
if ! command -v slurmctld >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null \
    || echo "warning: could not install slurm-wlm and munge; Slurm tests will skip" >&2
fi
exec python -m pytest "$@"
