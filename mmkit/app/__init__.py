"""Interactive use: the retrieval widgets (:mod:`~mmkit.app.widgets`) and driving JupyterLab in a
real browser (:mod:`~mmkit.app.browser`)."""
