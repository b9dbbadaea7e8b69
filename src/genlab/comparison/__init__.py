"""genlab-compare's parts: reading run folders (`reading`), the comparison table (`tables`) and its plots (`plots`)."""
