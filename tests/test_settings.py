"""The probe settings: one name and one default per option, shared by the API, the CLI and the probes' tables."""
import dataclasses

import pytest

from interp.cli import build_parser
from probes import settings as S


def subparser(name: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


@pytest.mark.parametrize("name", [*S.PROBE_SETTINGS, "eval"])
def test_cli_flags_are_the_settings_fields_with_their_defaults(name):
    cls = S.EvalSettings if name == "eval" else S.PROBE_SETTINGS[name]
    actions = {a.dest: a for a in subparser(name)._actions}
    for f in dataclasses.fields(cls):
        action = actions[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        assert action.default == f.default
    args = build_parser().parse_args([name, "--ckpt", "x"])
    assert cls.from_args(args) == cls()  # the CLI's defaults are the API's


def test_choices_agree_with_the_probes_tables():
    from interp.tasks.base import CORRUPTIONS
    from probes import attribution, patching

    assert set(S.PATCH_SITES) == set(patching.SITES)
    assert set(S.PATCH_BY) == {b for bys in patching.BY.values() for b in bys}
    assert set(S.DIRECTIONS) == set(patching.DIRECTIONS) == set(attribution.DIRECTIONS)
    assert set(S.CORRUPTIONS) == set(CORRUPTIONS)
    assert set(S.ATTRIBUTION_METHODS) == set(attribution.METHODS)
    assert set(S.ABLATIONS) == set(attribution.ABLATIONS)
    assert set(S.ATTRIBUTION_SITES) == set(attribution.SITES)
    assert set(S.SITE_ALIASES.values()) <= set(patching.SITES)


@pytest.mark.parametrize("cls, field, value, message", [
    (S.PatchSettings, "n", 1, "'n' parameter of PatchSettings must be an int >= 2"),
    (S.PatchSettings, "site", "nowhere", "'site' parameter of PatchSettings must be one of"),
    (S.PatchSettings, "layer", -1, "'layer' parameter of PatchSettings must be None or an int >= 0"),
    (S.AttributeSettings, "compare_exact", "yes", "'compare_exact' parameter of AttributeSettings must be a bool"),
    (S.SaturationSettings, "scales", [1.0, -2.0], "'scales' parameter of SaturationSettings"),
    (S.AlgorithmsSettings, "shots", [], "'shots' parameter of AlgorithmsSettings"),
    (S.EvalSettings, "n", 0, "'n' parameter of EvalSettings must be an int >= 1"),
])
def test_a_bad_value_names_the_field(cls, field, value, message):
    with pytest.raises(ValueError, match=message):
        cls(**{field: value})


def test_resolve_applies_overrides_and_names_unknown_arguments():
    base = S.PatchSettings(site="z")
    assert S.PatchSettings.resolve(base, {"n": 8}) == S.PatchSettings(site="z", n=8)
    assert S.PatchSettings.resolve(None, {}) == S.PatchSettings()
    assert S.PatchSettings(site="head").site_name == "z"
    with pytest.raises(ValueError, match="unknown argument.*of patch: sites"):
        S.PatchSettings.resolve(None, {"sites": "z"})
    with pytest.raises(ValueError, match="'settings' argument of patch must be a PatchSettings"):
        S.PatchSettings.resolve(S.ProbeSettings(), {})


def test_cli_list_flags_parse():
    args = build_parser().parse_args(["saturation", "--ckpt", "x", "--scales", "0.5,2", "--n", "32"])
    assert S.SaturationSettings.from_args(args) == S.SaturationSettings(scales=[0.5, 2.0], n=32)
    args = build_parser().parse_args(["probe", "--ckpt", "x", "--target", "w", "--positions", "y3,query"])
    assert S.ProbeSettings.from_args(args).positions == ["y3", "query"]
    args = build_parser().parse_args(["attribute", "--ckpt", "x", "--no-compare-exact"])
    assert S.AttributeSettings.from_args(args).compare_exact is False
