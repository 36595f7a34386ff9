"""How good a transcript is: scores against a reference (WER, cpWER, DER), reference-free
signals and flags, the repair of flagged chunks, reports and the history of runs."""
