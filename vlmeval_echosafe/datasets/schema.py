"""The row schema every MM-SafetyBench++ source (demo split, HF release) is turned into.

One place defines the categories, modes and labels so that loaders, metrics and reports agree.
"""

from __future__ import annotations

# Release category key -> (MM-SafetyBench scenario number, display name).
CATEGORIES: dict[str, tuple[int, str]] = {
    "Illegal_Activity": (1, "Illegal Activity"),
    "HateSpeech": (2, "Hate Speech"),
    "Malware_Generation": (3, "Malware Generation"),
    "Physical_Harm": (4, "Physical Harm"),
    "Fraud": (6, "Fraud"),
    "Sex": (7, "Sex"),
}
MODES: tuple[str, ...] = ("Gen", "GenOCR")
LABELS: tuple[str, ...] = ("unsafe", "safe")
# Unsafe/safe pairs per category in each image mode of the release (711 per mode and label, 2,844 rows in all).
EXPECTED_PAIRS: dict[str, int] = {
    "Illegal_Activity": 97,
    "HateSpeech": 163,
    "Malware_Generation": 44,
    "Physical_Harm": 144,
    "Fraud": 154,
    "Sex": 109,
}

# Columns of the TSV handed to VLMEvalKit; `image` holds base64 PNG/JPEG or the index of a row with the same image.
COLUMNS: tuple[str, ...] = ("index", "pair_id", "category", "mode", "label", "question", "key_phrase", "image")
