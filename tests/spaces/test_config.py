"""CompressionConfig: JSON round trips, validation messages, views."""

from __future__ import annotations

import json

import pytest

from vitsearch.spaces import CompressionConfig, ConfigError, TokensConfig
from vitsearch.spaces.knobs import ORDER, REGISTRY

from knob_examples import ALL_FIVE, KNOB_EXAMPLES


def test_every_knob_is_registered():
    assert set(REGISTRY) == set(ORDER)


def test_config_fields_and_every_part_of_a_knob_come_from_one_registration():
    """A sixth knob cannot be half-registered: a config field, a sub-space with a decode, a cost contribution."""
    from dataclasses import fields
    from inspect import isabstract

    from pydantic import BaseModel

    from vitsearch.spaces.knobs.base import FIELDS
    from vitsearch.spaces.knobs.subspace import KnobSpace

    assert tuple(f.name for f in fields(CompressionConfig)) == FIELDS
    assert set(FIELDS) == set(ORDER) == set(REGISTRY) and len(FIELDS) == len(ORDER)
    for name, knob in REGISTRY.items():
        assert isinstance(getattr(CompressionConfig(), name), knob.config_cls)
        assert issubclass(knob.space_spec, BaseModel) and knob.space_spec.model_config["extra"] == "forbid"
        assert issubclass(knob.space, KnobSpace) and not isabstract(knob.space), name  # decode, encode, count, ...
        assert callable(knob.shape) and (knob.prepare or knob.finalize), name
        # a knob reads only knobs resolved and decoded before it
        assert all(FIELDS.index(r) < FIELDS.index(name) for r in knob.space.reads), name


@pytest.mark.parametrize("name", sorted(KNOB_EXAMPLES))
def test_json_round_trip_per_knob(name):
    cfg = CompressionConfig.from_dict(KNOB_EXAMPLES[name])
    again = CompressionConfig.from_json(cfg.to_json())
    assert again == cfg and hash(again) == hash(cfg)
    assert json.loads(cfg.to_json())["schema_version"] == 1
    assert not cfg.is_identity()


def test_issue_json_form_round_trips():
    cfg = CompressionConfig.from_dict(ALL_FIVE)
    data = cfg.to_dict()
    assert data["tokens"] == {"schedule": {"2": 0.7, "4": 0.7}}
    assert data["heads"] == {"kv_heads": 2, "keep": 4}
    assert CompressionConfig.from_dict(json.loads(json.dumps(data))) == cfg
    assert cfg.summary() == "depth 6 | heads 4 kv 2 | attn 2:4 mlp structured:0.25 | tokens merge@2:0.7,4:0.7 | attn int8 mlp int8"


def test_empty_is_identity():
    cfg = CompressionConfig.from_dict({})
    assert cfg == CompressionConfig() and cfg.is_identity() and cfg.summary() == "identity"
    assert cfg.to_dict() == {"schema_version": 1}
    assert CompressionConfig.from_dict({"tokens": {"schedule": {"3": 1.0}}}).is_identity()


def test_knob_columns_are_flat_scalars():
    cols = CompressionConfig.from_dict(ALL_FIVE).knob_columns()
    assert cols["depth_keep"] == 6 and cols["heads_kv"] == 2 and cols["tokens_blocks"] == "2,4"
    assert all(v is None or isinstance(v, (int, float, str)) for v in cols.values())
    assert CompressionConfig().knob_columns().keys() == cols.keys()


def test_sparsity_spelling_is_canonical():
    a = CompressionConfig.from_dict({"sparsity": {"attn": "unstructured:0.50"}})
    b = CompressionConfig.from_dict({"sparsity": {"attn": "unstructured:0.5"}})
    assert a == b


def test_tokens_accepts_dict_and_pairs():
    assert TokensConfig(schedule={2: 0.7}) == TokensConfig(schedule=[("2", 0.7)])


@pytest.mark.parametrize("data, words", [
    ({"depth": {"keep": 0}}, ["depth.keep", "0", "positive integer"]),
    ({"depth": {"keep": "6"}}, ["depth.keep", "'6'"]),
    ({"depth": {"drop": 2}}, ["depth", "drop", "keep"]),
    ({"heads": {"keep": 4, "kv_heads": 3}}, ["heads.kv_heads", "3", "divide", "1, 2, 4"]),
    ({"heads": {"kv_heads": -1}}, ["heads.kv_heads", "-1"]),
    ({"tokens": {"method": "pool"}}, ["tokens.method", "'pool'", "merge, prune"]),
    ({"tokens": {"schedule": {"2": 0.3}}}, ["tokens.schedule[2]", "0.3", "0.5", "prune"]),
    ({"tokens": {"schedule": {"2": 1.5}}}, ["tokens.schedule[2]", "1.5", "(0, 1]"]),
    ({"tokens": {"schedule": {"x": 0.7}}}, ["tokens.schedule", "'x'", "block index"]),
    ({"tokens": {"schedule": [0.7]}}, ["tokens.schedule"]),
    ({"depth": {"keep": 3}, "tokens": {"schedule": {"3": 0.7}}}, ["tokens.schedule", "block 3", "0..2"]),
    ({"sparsity": {"attn": "structured:0.5"}}, ["sparsity.attn", "mlp only"]),
    ({"sparsity": {"mlp": "unstructured:1.5"}}, ["sparsity.mlp", "unstructured:1.5", "0 < p < 1"]),
    ({"sparsity": {"mlp": "1:4"}}, ["sparsity.mlp", "'1:4'", "2:4"]),
    ({"precision": {"mlp": "int3"}}, ["precision.mlp", "'int3'", "int8"]),
    ({"quant": {}}, ["unknown knob", "quant"]),
    ({"schema_version": 99}, ["schema_version", "99"]),
    ([], ["expected a JSON object"]),
])
def test_invalid_configs_are_rejected_clearly(data, words):
    with pytest.raises(ConfigError) as err:
        CompressionConfig.from_dict(data)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_bad_json_text():
    with pytest.raises(ConfigError, match="not valid JSON"):
        CompressionConfig.from_json("{depth:")


def test_import_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, vitsearch.spaces as s; s.CompressionConfig(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
