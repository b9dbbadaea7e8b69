"""LightningModules: the training logic, losses and logged metrics of each model."""
