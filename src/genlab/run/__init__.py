"""The run folder, the unit users hold: its layout (every file and folder name, once), its records (metrics.json,
eval.json), the saved config, the lock, the manifest, checkpoints, `resume=`, and loading a run back.

Light on purpose: every module here but `checkpoint_io` and `loading` needs neither torch nor Lightning, so
`genlab-compare`, `--help` and the checks made before a run starts read run folders without the deep-learning imports.
"""
