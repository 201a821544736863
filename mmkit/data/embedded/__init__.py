"""The embedded dataset: music21 corpus works cut into excerpts, rendered to audio, a score image
and captions, featurised and cached (:mod:`~mmkit.data.embedded.corpus`,
:mod:`~mmkit.data.embedded.captions`, :mod:`~mmkit.data.embedded.build`). Never imports
:mod:`mmkit.data.user`.
"""
