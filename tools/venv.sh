# Sourced by ./dashboard.sh and ./run_tests.sh: make sure the project-local virtual environment
# .venv/ exists and holds exactly what the requirements file ($1) declares, then put it first on
# PATH. The environment is isolated from the system's packages, so a dependency the requirements
# forget fails here (and on CI, which starts from a fresh clone) instead of hiding behind a
# package somebody installed by hand.
#
# pip runs only when a requirements file changed since the last install (a stamp holds their
# hash), so the second start costs nothing. PYTHON picks the interpreter (default: python3).

_venv_requirements="$1"
_venv_dir="$(pwd)/.venv"
_venv_python="${PYTHON:-python3}"

if [ ! -x "$_venv_dir/bin/python" ]; then
  echo "Creating the project's virtual environment in $_venv_dir ..." >&2
  "$_venv_python" -m venv "$_venv_dir" || {
    echo "error: '$_venv_python -m venv' failed; install Python's venv module (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi

_venv_stamp="$_venv_dir/.requirements-$(basename "$_venv_requirements").sha256"
_venv_hash="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$_venv_stamp" 2>/dev/null)" != "$_venv_hash" ]; then
  echo "Installing $_venv_requirements into $_venv_dir ..." >&2
  "$_venv_dir/bin/python" -m pip install -q -r "$_venv_requirements" || {
    echo "error: installing $_venv_requirements into $_venv_dir failed (see pip's message above)" >&2
    exit 1
  }
  echo "$_venv_hash" > "$_venv_stamp"
fi

export VIRTUAL_ENV="$_venv_dir"
export PATH="$_venv_dir/bin:$PATH"
unset PYTHONHOME
