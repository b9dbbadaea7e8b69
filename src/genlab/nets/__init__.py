"""Plain torch.nn architectures, sized from a data shape; they know nothing of Lightning or Hydra."""
