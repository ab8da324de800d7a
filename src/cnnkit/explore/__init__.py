"""`cnnkit explore`: a live page that shows a network's layers, its decision and why, for one drawn image.

`trace` splits a model into units (a layer with the batch norm and activation that follow it) and follows
receptive fields; `cell` lays out the arithmetic of one output cell; `session` does what the page asks; `app` is
the HTTP API (Starlette) and `server` runs it (uvicorn). The page itself is plain HTML/CSS/JS in `static/`.
"""
