"""Users' own data: an ``items.csv`` of media files (:mod:`~mmkit.data.user.items`,
:mod:`~mmkit.data.user.media`), precomputed feature vectors (:mod:`~mmkit.data.user.imports`) and
the example-folder generator (:mod:`~mmkit.data.user.example`). Rendering of symbolic scores reuses
the embedded build's engraving and synthesis.
"""
