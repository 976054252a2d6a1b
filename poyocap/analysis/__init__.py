"""Analyses of notebook 07: why (the paper says) predictable neurons help. Pure functions with known-answer tests;
``poyocap.stages.analyses`` runs them on the pipeline's artifacts.

- :mod:`.fisher`: empirical Fisher information of the pretraining loss per data point (the authors' reading) and the
  bias-corrected linear Fisher information about grating direction (Kanitscheider et al. 2015).
- :mod:`.landscape`: loss surfaces on the PCA plane of a training trajectory and on filter-normalised random
  directions (Li et al. 2018); roughness.
- :mod:`.curves`: steps to reach a score (training efficiency), slopes per log10(parameters) with CIs (scaling),
  monotone trends (dose-response).
- :mod:`.transfer`: relative weight change per module, linear CKA.
"""
