"""genlab's Optuna sweeper (hydra/sweeper=optuna): a study kept in the sweep folder's SQLite file or any RDB URL,
continued by the same command, with pruning reported from inside each run and failed runs told as failed."""
