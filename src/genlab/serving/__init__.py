"""Serving a trained run over HTTP (`genlab-serve`): FastAPI and uvicorn, from the `[serve]` extra.

Nothing outside `genlab.serve` imports this package, so `import genlab` and the other commands never load the serving
stack.
"""
