"""Tag names of vampstudy's run layout in the tracking store (no imports: shared by
planning, recording and tracking)."""

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

