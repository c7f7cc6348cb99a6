#!/usr/bin/env bash
# The dashboard command from the README. It sets up the project-local virtual environment .venv/
# (created when missing, filled from requirements.txt) and starts the dashboard in it; arguments
# go to the dashboard, e.g. ./dashboard.sh --models_root runs
set -euo pipefail
cd "$(dirname "$0")"
. tools/venv.sh requirements.txt
if [ "$#" -gt 0 ]; then
  exec streamlit run dashboard.py -- "$@"
fi
exec streamlit run dashboard.py
