"""poyocap: a notebook-first companion to POYO-CAP (ICLR 2026).

"Decoding Dynamic Visual Experience from Calcium Imaging via Cell-Pattern-Aware Pretraining".
The package holds all logic; the notebooks in ``notebooks/`` only call it.
"""

__version__ = "0.1.0"
