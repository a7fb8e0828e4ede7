"""Log entries: strict JSON and JCS (strict_json), schemas (schema), signing (signing), the
fast path for stored leaves (fast), release/v1 (release, install), the registry kinds
(registry_kinds), and the table of kinds every decision by kind consults (kinds)."""
