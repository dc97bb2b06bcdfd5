"""Serving: an OpenAI-compatible HTTP server over a continuous-batching engine.

engine.py    the scheduler and the model step: KV-cache slots, admission, per-slot sampling (never sees HTTP)
protocol.py  request/response models, validation, OpenAI error bodies, SSE framing (never touches tensors)
app.py       the FastAPI routes, metrics and the web chat page, driving an engine through its public methods
"""
