"""Example configs shared by the spaces tests: every registered knob's examples, and all five at once."""

from vitsearch.spaces.knobs import REGISTRY

#: (id, config dict) for every example every registered knob declares.
KNOB_EXAMPLES = {f"{k.name}-{i}": {k.name: ex} for k in REGISTRY.values() for i, ex in enumerate(k.examples)}
ALL_FIVE = {
    "depth": {"keep": 6},
    "heads": {"kv_heads": 2, "keep": 4},
    "tokens": {"method": "merge", "schedule": {"2": 0.7, "4": 0.7}},
    "sparsity": {"attn": "2:4", "mlp": "structured:0.25"},
    "precision": {"attn": "int8", "mlp": "int8"},
}
