import inspect
from pathlib import Path

import pytest
import yaml

from vitsearch.search.study import StudySpec, default_study_path, load_study, parse_study, study_to_yaml
from vitsearch.spaces.errors import ConfigError

STUDIES = sorted((Path(__file__).parents[2] / "studies").glob("*.yaml"))


def test_studies_folder_is_not_empty():
    assert {p.name for p in STUDIES} >= {"default.yaml", "deit_small_imagenet.yaml"}


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_study_file_validates(path):
    spec = load_study(path)
    # the resolved form round-trips: what a run dir stores reloads to the same spec
    assert parse_study(yaml.safe_load(study_to_yaml(spec))) == spec
    assert parse_study(spec.model_dump(mode="json")) == spec  # a plain dump reloads too
    assert parse_study({"recovery": {"steps": 40, "enabled": False}}).recovery.ladder == (0,)


def test_embedded_default_is_the_repo_default():
    assert default_study_path().read_text() == (Path(__file__).parents[2] / "studies" / "default.yaml").read_text()
    spec = load_study("default")
    assert spec.model.name == "builtin:vitsearch-tiny" and spec.data.source == "mnist5k" and spec.device == "cpu"


def test_defaults_fill_an_empty_study():
    spec = parse_study({})
    assert [o.metric for o in spec.objectives] == ["accuracy", "latency_ms"]
    assert spec.search.sampler == "nsga2" and spec.run_dir() == Path("runs/default")


def test_recovery_lr_default_is_the_distillations():
    from vitsearch.evaluators.distill import DISTIL_LR, distilled

    # one default, said twice (the study's schema does not import torch): both must move together
    assert parse_study({}).recovery.lr == DISTIL_LR == inspect.signature(distilled).parameters["lr"].default == 5e-4


@pytest.mark.parametrize("doc, match", [
    ({"modle": {}}, "unknown field 'modle'"),
    ({"model": {"name": "resnet"}}, "field 'model.name'"),
    ({"device": "gpu"}, "field 'device'.*cpu, cuda, cuda:N or auto.*'gpu'"),
    ({"latency": {"batch_size": 0}}, "field 'latency.batch_size'"),
    ({"search": {"sampler": "cmaes"}}, "field 'search.sampler'.*'cmaes'"),
    ({"search": {"trials": "many"}}, "field 'search.trials'"),
    ({"data": {"source": "imagefolder"}}, "data.path is required"),
    ({"objectives": [{"metric": "accuracy", "direction": "maximize"}] * 2}, "distinct"),
    ([1, 2], "YAML mapping"),
    ({"recovery": {"rungs": [50, 10]}}, r"recovery.rungs \[50, 10\] must be strictly increasing"),
    ({"recovery": {"rungs": [10, 10]}}, "strictly increasing"),
    ({"recovery": {"rungs": [0]}}, "recovery disabled"),
    ({"recovery": {"rungs": [10, 60], "enabled": False}}, r"given with recovery disabled \(recovery.enabled: false\)"),
    ({"recovery": {"rungs": [10, 60], "steps": 40}}, "given with steps: 40; give either steps or rungs"),
    ({"recovery": {"rungs": [10, 60], "reduction": 1}}, "recovery.reduction 1.0 must be > 1"),
    ({"recovery": {"augment": "rotate"}}, "field 'recovery.augment'.*'rotate'"),
    ({"device": "cuda\n"}, "field 'device'.*cpu, cuda, cuda:N or auto"),
    ({"name": "default\n"}, "field 'name'"),
])
def test_bad_study_documents_give_one_line(doc, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_study(doc, "x.yaml")
    assert "\n" not in str(err.value)


def test_bad_study_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_study(bad)


def test_spec_is_frozen():
    spec = StudySpec()
    with pytest.raises(Exception):
        spec.device = "cuda"


def test_rungs_resolve_and_round_trip():
    spec = parse_study({"recovery": {"rungs": [10, 60, 200], "reduction": 3}})
    assert spec.recovery.ladder == (10, 60, 200) and spec.recovery.reduction == 3
    assert parse_study({"recovery": {"steps": 40}}).recovery.ladder == (40,)
    assert parse_study(yaml.safe_load(study_to_yaml(spec))) == spec
    assert parse_study(spec.model_dump(mode="json")) == spec  # a plain dump reloads too
    assert parse_study({"recovery": {"steps": 40, "enabled": False}}).recovery.ladder == (0,)


def test_numbers_are_not_coerced_from_bools_or_floats():
    for doc, match in [({"search": {"trials": True}}, "field 'search.trials'"),
                       ({"search": {"trials": 40.0}}, "field 'search.trials'"),
                       ({"recovery": {"alpha": False}}, "field 'recovery.alpha': must be a number"),
                       ({"latency": {"input_size": [1, True, 28]}}, "field 'latency.input_size.1'"),
                       ({"recovery": {"rungs": [10, 2_000_000]}}, "0..1,000,000"),
                       ({"search": {"seed": 2**32}}, "a seed is 0..4,294,967,295")]:
        with pytest.raises(ConfigError, match=match):
            parse_study(doc)
    # what YAML writes for numbers still reads: ints as floats, PyYAML's 1e-4 (a string) as a float
    spec = parse_study(yaml.safe_load("recovery: {lr: 1e-4, temperature: 2}\nsearch: {seed: 4294967295}"))
    assert spec.recovery.lr == 1e-4 and spec.recovery.temperature == 2.0 and spec.search.seed == 2**32 - 1


def test_a_key_written_twice_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: a\nrecovery:\n  lr: 0.1\n  steps: 3\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"key 'lr' written twice \(line 3 and line 5\); keep one"):
        load_study(path)
    # the same key in two mappings, and a key that overrides a YAML merge, are fine
    path.write_text("name: a\ndata: {seed: 1}\nsearch: {seed: 2}\nrecovery:\n  <<: {steps: 3, lr: 0.1}\n  lr: 0.2\n")
    spec = load_study(path)
    assert (spec.data.seed, spec.search.seed, spec.recovery.steps, spec.recovery.lr) == (1, 2, 3, 0.2)


def test_recovery_augment_takes_what_distillation_does_and_is_off_when_unsaid():
    from typing import get_args

    from vitsearch.evaluators.augment import AUGMENTS
    from vitsearch.search.study import RecoverySection

    assert get_args(RecoverySection.model_fields["augment"].annotation) == AUGMENTS
    assert parse_study({}).recovery.augment == "none"  # a run made before the setting rebuilds as it was made
    assert "augment" not in parse_study({}).recovery.model_dump()  # and compares equal to its stored study
    shift = parse_study({"recovery": {"augment": "shift"}})
    assert shift.recovery.augment == "shift" and shift.recovery.model_dump()["augment"] == "shift"
