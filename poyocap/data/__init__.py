"""Data sources (synthetic observatory, Allen Brain Observatory) behind one contract: :class:`Recording`."""

from .recording import GRATING_DIRECTIONS, GRATING_TEMPORAL_FREQS, Recording, RecordingFileError

__all__ = ["Recording", "RecordingFileError", "GRATING_DIRECTIONS", "GRATING_TEMPORAL_FREQS"]
