"""Launch: one form for the four ways to start training — fresh start, resume from a checkpoint,
auto-resume, start from pretrained weights — run as a background job (training.jobs.registry).

Every training argument is a field (from training.config.OPTIONS, grouped), filled from the chosen
checkpoint's stored ``args``. Before anything starts the page shows the exact ``python main.py``
command and the hyperparameters that differ from the checkpoint; Launch starts the run only when
the values submitted are the ones that preview showed (a changed form is previewed first).

Other pages link here with query parameters: ``mode`` (fresh | resume | auto_resume | pretrained),
``checkpoint=<experiment>/<file>`` or ``experiment=<name>``. All logic is in training.launch_form.
The form's values, mode and checkpoint survive a visit to another page (training.dashboard.widget_memory).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from pages import slurm_ui
from pages.common import ensure_navigation, models_root, page_title, refusal, signed_in
from pages.evaluate_form import evaluate_form
from training.dashboard import catalog
from training.dashboard import launch_form as lf
from training.dashboard import widget_memory
from training.config import Option
from training.jobs import MODES, NEEDS_CHECKPOINT, JobConflict

# --- constants ----------------------------------------------------------------------------------
MODE_KEY = "launch_mode"
CHECKPOINT_KEY = "launch_checkpoint"
EXPERIMENT_KEY = "launch_experiment"
FIELD_PREFIX = "launch_opt_"                   # + option name: one widget per option
DEFAULTS_SOURCE_KEY = "launch_defaults_source"  # whose args the fields were last filled from
URL_SEEN_KEY = "launch_url_seen"                # the query parameters already applied
PREVIEWED_KEY = "launch_previewed"              # fingerprint of the run the page last showed
RESULT_KEY = "launch_result"                    # (kind, message, job id) of the last submit
MEMORY_KEY = "_launch_form_memory"              # the widgets' values, kept while the page is not shown
URL_PARAMS = ("mode", "checkpoint", "experiment")
JOBS_PAGE = "pages/jobs.py"
FIELDS_PER_ROW = 4


# --- data loading ---------------------------------------------------------------------------------
# No st.cache_data: the catalog caches every file's metadata keyed by (path, size, mtime), so a
# rescan costs one stat per file and a checkpoint written a second ago is already offered.

def load_checkpoints(root: str) -> pd.DataFrame:
    return catalog.scan_checkpoints(root)


# --- components -----------------------------------------------------------------------------------

def field_key(name: str) -> str:
    return FIELD_PREFIX + name


def remembered_keys() -> list[str]:
    """Every widget of the page whose value must survive a visit to another page."""
    return [MODE_KEY, CHECKPOINT_KEY, EXPERIMENT_KEY, *(field_key(name) for name in lf.FIELDS_BY_NAME)]


def apply_url(choices: list[lf.CheckpointChoice]) -> list[str]:
    """Preselect mode, checkpoint and experiment from a link, once per distinct link."""
    wanted = {k: st.query_params.get(k) for k in URL_PARAMS}
    if wanted == st.session_state.get(URL_SEEN_KEY) or not any(wanted.values()):
        return []
    st.session_state[URL_SEEN_KEY] = wanted
    problems = []
    if wanted["mode"] in MODES:
        st.session_state[MODE_KEY] = wanted["mode"]
    elif wanted["mode"]:
        problems.append(f"The link's mode {wanted['mode']!r} is not one of {', '.join(MODES)}")
    if wanted["checkpoint"]:
        choice = lf.find_choice(choices, wanted["checkpoint"])
        if choice is None:
            problems.append(f"The link's checkpoint {wanted['checkpoint']!r} is not a usable checkpoint "
                            f"in the models root {models_root()}")
        st.session_state[CHECKPOINT_KEY] = choice.key if choice else None
    if wanted["experiment"]:
        st.session_state[EXPERIMENT_KEY] = wanted["experiment"]
    return problems


def remember_in_url() -> None:
    """Keep mode / checkpoint / experiment in the URL so the form can be shared."""
    params = {"mode": st.session_state.get(MODE_KEY), "checkpoint": st.session_state.get(CHECKPOINT_KEY),
              "experiment": st.session_state.get(EXPERIMENT_KEY)}
    mode = params["mode"]
    if mode not in NEEDS_CHECKPOINT:
        params["checkpoint"] = None
    if mode != "auto_resume":
        params["experiment"] = None
    for key, value in params.items():
        if value:
            st.query_params[key] = value
        else:
            st.query_params.pop(key, None)
    st.session_state[URL_SEEN_KEY] = {k: st.query_params.get(k) for k in URL_PARAMS}


def fill_fields(source: tuple | None, mode: str, stored: dict[str, Any]) -> list[str]:
    """Set every field to the defaults of ``source`` when it changed (a new checkpoint picked);
    otherwise leave the user's edits alone. Returns notes about values that could not be used."""
    if source is None and DEFAULTS_SOURCE_KEY in st.session_state:
        return []
    if source is not None and st.session_state.get(DEFAULTS_SOURCE_KEY) == source:
        return []
    values, notes = lf.form_defaults(mode, stored)
    for name, opt in lf.FIELDS_BY_NAME.items():
        st.session_state[field_key(name)] = lf.widget_value(opt, values[name])
    st.session_state[DEFAULTS_SOURCE_KEY] = source
    return notes


def render_field(opt: Option) -> Any:
    key = field_key(opt.name)
    if opt.kind is bool:
        return st.checkbox(opt.name, key=key, help=opt.help)
    if opt.choices:
        return st.selectbox(opt.name, opt.choices, key=key, help=opt.help)
    if opt.kind is int:
        return st.number_input(opt.name, key=key, step=1, format="%d", help=opt.help,
                               placeholder="not set")
    return st.text_input(opt.name, key=key, help=opt.help)


def render_fields() -> dict[str, Any]:
    raw = {}
    for group, opts in lf.fields_by_group().items():
        st.markdown(f"**{lf.GROUP_TITLES.get(group, group.title())}**")
        for start in range(0, len(opts), FIELDS_PER_ROW):
            for col, opt in zip(st.columns(FIELDS_PER_ROW), opts[start:start + FIELDS_PER_ROW]):
                with col:
                    raw[opt.name] = render_field(opt)
    return raw


def render_preview(plan: lf.LaunchPlan) -> None:
    st.markdown(f"**Experiment folder:** `{plan.experiment}`")
    if plan.disk:  # the CLI's "Disk:" line (training.checkpoint.disk): what the checkpoints will take
        st.caption(plan.disk)
    for error in plan.errors:
        st.error(error)
    for warning in plan.warnings:
        st.warning(warning)
    if plan.command:
        st.caption("Equivalent command")
        st.code(plan.command, language="bash", wrap_lines=True)
    if plan.checkpoint is not None:
        if plan.diff:
            st.caption(f"Hyperparameters that differ from {plan.checkpoint.file}")
            st.dataframe(plan.diff_frame(), hide_index=True, width="content")
        elif plan.checkpoint.kind == "legacy":
            st.caption(f"{plan.checkpoint.file} stores no hyperparameters to compare with.")
        elif plan.ok:
            st.caption(f"Same hyperparameters as {plan.checkpoint.file}.")


def submit(root: str, plan: lf.LaunchPlan, slurm_launch: dict[str, Any] | None = None) -> None:
    """Launch the previewed plan; the outcome is shown at the top of the page."""
    if not signed_in():
        st.session_state[RESULT_KEY] = ("error", refusal("Launch"), None)
        return
    if not plan.ok:
        st.session_state[RESULT_KEY] = ("error", "Not launched: " + plan.errors[0], None)
        return
    if plan.fingerprint() != st.session_state.get(PREVIEWED_KEY):
        st.session_state[RESULT_KEY] = (
            "info", "The values changed: check the command and the differences below, then press Launch again.", None)
        return
    if slurm_launch is not None:  # the Slurm target: the same run, submitted (training.jobs.slurm)
        st.session_state[RESULT_KEY] = slurm_ui.submit(root, plan.mode, plan.args, slurm_launch)
        return
    try:
        job = lf.launch(root, plan)
    except JobConflict as exc:
        st.session_state[RESULT_KEY] = ("error", f"Not launched: {exc}", None)
    except (ValueError, OSError, RuntimeError) as exc:
        st.session_state[RESULT_KEY] = ("error", f"Not launched: {exc}", None)
    else:
        st.session_state[RESULT_KEY] = ("success", f"Launched job #{job.id}: {job.experiment}", job.id)


def render_result() -> None:
    result = st.session_state.get(RESULT_KEY)
    if not result:
        return
    kind, message, job_id = result
    getattr(st, kind)(message)
    if job_id is not None:
        st.page_link(JOBS_PAGE, label=f"Follow job #{job_id} on the Jobs page", icon="⚙️",
                     query_params={"job": str(job_id)})


# --- layout ---------------------------------------------------------------------------------------

ensure_navigation()
page_title("Launch a training run")
root = str(models_root())
checkpoints = load_checkpoints(root)
choices = lf.checkpoint_choices(checkpoints)
widget_memory.restore(st.session_state, MEMORY_KEY, remembered_keys())  # before apply_url: a new link wins
for problem in apply_url(choices):
    st.error(problem)

mode = st.radio("Mode", MODES, key=MODE_KEY, format_func=lf.MODE_LABELS.get, horizontal=True,
                on_change=remember_in_url)
st.caption(lf.MODE_HELP[mode])
slurm_launch, slurm_errors = slurm_ui.launch_target()

checkpoint = None
stored: dict[str, Any] = {}
source: tuple | None = None
if mode in NEEDS_CHECKPOINT:
    keys = [c.key for c in choices]
    if st.session_state.get(CHECKPOINT_KEY) not in keys:
        st.session_state[CHECKPOINT_KEY] = None
    labels = {c.key: c.label() for c in choices}
    picked = st.selectbox("Checkpoint", keys, key=CHECKPOINT_KEY, format_func=labels.get,
                          index=None, placeholder="Choose a checkpoint from the models root",
                          on_change=remember_in_url)
    if not choices:
        st.info(f"No checkpoints under {root} yet: start a fresh run first.")
    checkpoint = lf.find_choice(choices, picked)
    if checkpoint is not None:
        stored = lf.stored_args(checkpoint.path)
        source = ("checkpoint", checkpoint.key, mode == "pretrained")
elif mode == "auto_resume":
    names = catalog.list_experiment_names(root)
    if st.session_state.get(EXPERIMENT_KEY) not in names:
        st.session_state[EXPERIMENT_KEY] = None
    picked = st.selectbox("Fill the form from experiment", names, key=EXPERIMENT_KEY, index=None,
                          placeholder="(optional) an experiment to continue", on_change=remember_in_url,
                          help="Auto-resume continues the folder the fields below name; picking an "
                               "experiment fills them with its settings.")
    if picked:
        stored = lf.experiment_stored_args(root, checkpoints, picked)
        source = ("experiment", picked)
for note in fill_fields(source, mode, stored):
    st.warning(note)

with st.form("launch_form", border=True):
    raw_values = render_fields()
    preview_col, launch_col, _ = st.columns([2, 1, 4])
    preview_clicked = preview_col.form_submit_button("Update preview")
    launch_clicked = launch_col.form_submit_button("Launch", type="primary")
widget_memory.remember(st.session_state, MEMORY_KEY, remembered_keys())

plan = lf.plan_launch(root, mode, raw_values, checkpoint, stored if checkpoint is not None else None,
                      checkpoints)
plan.errors += slurm_errors
if plan.command and slurm_launch is not None:
    plan.command += slurm_ui.command_suffix(slurm_launch)
if launch_clicked:
    submit(root, plan, slurm_launch)
elif preview_clicked:
    st.session_state.pop(RESULT_KEY, None)
# Recorded before anything is drawn: a Launch click that interrupts this run can only have been
# made after seeing what the run draws below, i.e. this plan.
st.session_state[PREVIEWED_KEY] = plan.fingerprint()
render_result()  # right under the buttons, where the eye is after pressing one
render_preview(plan)
if checkpoint is not None:  # scoring the chosen checkpoint instead of training from it
    with st.expander(f"Evaluate {checkpoint.file} on ...", expanded=False):
        evaluate_form(root, checkpoint.path, "launch")
