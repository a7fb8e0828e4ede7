"""Log entries: strict JSON and JCS (strict_json), schemas (schema), signing (signing), the
fast path for stored leaves (fast), and release/v1 (release, install)."""
