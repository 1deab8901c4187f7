"""Tag names of vampstudy's run layout in the tracking store, and the MLflow UI's
addresses (no imports: shared by planning, recording, tracking and the CLI, which
reports a study's addresses without opening the store)."""

TAG_ROLE = "vampstudy.role"            # study | condition | control | check
TAG_STUDY = "vampstudy.study"
TAG_BACKEND = "vampstudy.backend"
TAG_CONFIG = "vampstudy.config_hash"
TAG_TRIAL = "vampstudy.trial_key"      # stable condition key (clip, condition, seed)
TAG_CONDITION = "vampstudy.condition_key"
TAG_CHECK = "vampstudy.last_check"
TAG_PARENT = "mlflow.parentRunId"
TAG_NOTE = "mlflow.note.content"
TAG_ORDER = "vampstudy.trial_index"    # position of the trial in the plan (run order)
TAG_CONTROL = "vampstudy.control"     # codec | noise on control runs (absent on conditions)

VIEW_URL_PARAM = "viewStateShareKey"   # MLflow UI: URL parameter naming a shared view


def ui_url(experiment_id: str | None, host: str = "127.0.0.1", port: int = 5000,
           view_key: str | None = None, charts: bool = False) -> str:
    """The classic runs table (MLflow 3's UI opens the GenAI view otherwise), opened on the
    saved view ``view_key`` when given, on its charts when ``charts``."""
    base = f"http://{host}:{port}/"
    if experiment_id is None:
        return base
    url = f"{base}#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if view_key:
        url += f"&{VIEW_URL_PARAM}={view_key}"
    return url + "&compareRunsMode=CHART" if charts else url
