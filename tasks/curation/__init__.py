"""Data curation: raw documents -> records -> stages (normalise, filter, redact, dedupe) -> curated JSONL."""
