"""Audio: decode once to 16 kHz mono, cut into chunks inside silences, and tell speech from silence,
noise and music."""
