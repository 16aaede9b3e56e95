"""Every file name of a run directory, in one place (docs/run-directory.md describes each)."""

CONFIG = "config.toml"  # the resolved configuration the run started with
EVALUATIONS = "evaluations.jsonl"  # the append-only log: one record per finished evaluation
REJECTED = "evaluations.rejected.jsonl"  # log records a resume found unusable, set aside
CHECKPOINT = "checkpoint.json"  # the search's state after the last completed step
PREVIOUS = "checkpoint.prev.json"  # the checkpoint before it, should the last be damaged
LOCK = "lock.json"  # which process holds the run directory
DATA_REPORT = "data_report.json"  # what the dataset cache read, skipped and split
SUMMARY = "summary.json"  # written once, when the run has ended
PROVISIONAL_SUMMARY = "summary.provisional.json"  # written while the run goes
RECOMPUTED_SUMMARY = "summary.recomputed.json"  # `evores report` on a summary that differs
SUMMARY_FILES = (SUMMARY, PROVISIONAL_SUMMARY)
IMPORTANCE = "importance.json"  # the genes' importance per stage
IMPORTANCE_PLOT = "importance.png"
PLOTS = {
    "evaluations": "progress_evaluations.png",
    "time": "progress_time.png",
    "elites": "elites_low_vs_high.png",
}
WEIGHTS = "winner.safetensors"  # the winner's trained network
DESCRIPTION = "winner.json"  # what load_model needs to rebuild and feed it
CANDIDATE = "final-{index}.safetensors"  # each final candidate's network, before one wins
TENSORBOARD = "tensorboard"  # the folder of TensorBoard's event files (report.tensorboard)
