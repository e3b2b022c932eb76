"""trl_compat's import-time check of the TRL members trl_ext relies on, the supported-version range, and the one
TRL check it gets past (``num_generations=1``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import trl
from packaging.requirements import Requirement
from packaging.version import Version
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.dpo_trainer import DPOTrainer

from trl_ext.trainers import trl_compat
from trl_ext.trainers.trl_compat import SUPPORTED_TRL, TrlMember, check_trl_members, missing_trl_members

_GRPO = "trl.trainer.grpo_trainer:GRPOTrainer"


def test_installed_trl_has_every_member():
    assert missing_trl_members() == []
    check_trl_members()


@pytest.mark.parametrize("cls,name", [(GRPOTrainer, "_calculate_rewards"), (GRPOTrainer, "_log_metric"),
                                      (DPOTrainer, "_precompute_ref_logps")])
def test_missing_method_is_named_with_versions(monkeypatch, cls, name):
    monkeypatch.delattr(cls, name)
    with pytest.raises(ImportError) as error:
        check_trl_members()
    message = str(error.value)
    assert f"{cls.__module__}.{cls.__name__}.{name} (method" in message
    assert f"trl {trl.__version__} does not have" in message
    assert "supports trl>=1.16,<1.17" in message
    assert message.count("(method") == 1  # only the deleted one


def test_overridden_hooks_are_checked():
    """The GRPOTrainer / DPOTrainer methods trl_ext overrides are in the list: an override of a method TRL dropped
    would silently never run."""
    checked = {(m.owner, m.name) for m in trl_compat.TRL_MEMBERS}
    for name in ("_generate_and_score_completions", "_calculate_rewards", "_compute_loss",
                 "_get_per_token_logps_and_entropies"):
        assert (_GRPO, name) in checked
    for name in ("_prepare_dataset", "_precompute_ref_logps"):
        assert ("trl.trainer.dpo_trainer:DPOTrainer", name) in checked


def test_every_kind_of_miss_is_reported_in_one_error():
    members = (
        TrlMember(_GRPO, "_metrics", "instance attribute", "ok"),
        TrlMember(_GRPO, "_no_such_attribute", "instance attribute", "a"),
        TrlMember("trl:GRPOConfig", "no_such_field", "field", "b"),
        TrlMember("trl.data_utils", "_no_such_function", "attribute", "c"),
        TrlMember("trl.no_such_module:Thing", "x", "method", "d"),
        TrlMember(_GRPO, "_tag_names", "method", "e"),  # an attribute, not callable
        TrlMember("trl.data_utils", "_no_such_function", "attribute", "f", requires="no_such_package_trl_ext"),
    )
    assert missing_trl_members(members) == [
        "trl.trainer.grpo_trainer.GRPOTrainer._no_such_attribute (instance attribute, used by a)",
        "trl.GRPOConfig.no_such_field (field, used by b)",
        "trl.data_utils._no_such_function (attribute, used by c)",
        "trl.no_such_module.Thing.x (method, used by d)",
        "trl.trainer.grpo_trainer.GRPOTrainer._tag_names (method, used by e)",
    ]
    with pytest.raises(ImportError, match=r"no_such_attribute .*; trl\.GRPOConfig\.no_such_field"):
        check_trl_members(members)


def test_instance_attributes_are_found_in_the_methods_that_assign_them():
    class Base:
        def __init__(self):
            self._from_init = 1

            def nested():
                self._from_nested = 2

            nested()

    class Child(Base):
        @property
        def value(self):
            self._from_property = 3
            return 0

        def read_only(self):
            return self._only_read

    Base.__module__ = Child.__module__ = "trl.fake_module"
    names = trl_compat._assigned_attributes(Child)
    assert {"_from_init", "_from_nested", "_from_property"} <= names
    assert "_only_read" not in names


def test_pin_is_the_supported_range_and_installed_trl_is_in_it():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    pins = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "trl"]
    assert [str(p.specifier) for p in pins] == [str(Requirement(f"trl{SUPPORTED_TRL}").specifier)]
    assert Version(trl.__version__) in pins[0].specifier
    assert Version("1.17.0") not in pins[0].specifier and Version("1.15.0") not in pins[0].specifier


def test_num_generations_one_gets_past_only_trls_group_minimum(tmp_path):
    common = dict(output_dir=str(tmp_path), per_device_train_batch_size=3, use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="at least 2 generations"):  # the TRL check that is bypassed
        GRPOConfig(num_generations=1, **common)

    seen = []

    def post_init():
        seen.append((config.num_generations < 2, 3 % config.num_generations, config.num_generations == 1))

    config = GRPOConfig.__new__(GRPOConfig)
    config.num_generations = 1
    trl_compat.grpo_post_init_allowing_one_generation(config, post_init)
    assert seen == [(False, 0, True)]
    assert config.num_generations == 1 and type(config.num_generations) is int
    config.num_generations = 2
    trl_compat.grpo_post_init_allowing_one_generation(config, post_init)
    assert seen[-1] == (False, 1, False) and type(config.num_generations) is int
