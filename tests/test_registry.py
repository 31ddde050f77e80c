"""The shared name → factory registry."""

import pytest

from mpsctl.registry import Registry


def test_register_list_get_and_refuse_duplicates():
    reg: Registry = Registry("widget")

    @reg.register("beta")
    def beta():
        return 2

    reg.register("alpha")(lambda: 1)
    assert reg.names() == ["alpha", "beta"]
    assert reg.names("b*") == ["beta"]
    assert reg.get("beta") is beta and "alpha" in reg
    with pytest.raises(ValueError, match="widget 'beta' registered twice"):
        reg.register("beta")(lambda: 3)
    with pytest.raises(KeyError, match="did you mean 'beta'"):
        reg.get("betta")


def test_one_suggestion_rule_for_every_misspelt_name():
    from mpsctl.registry import closest, did_you_mean

    assert closest("resnt8", ["resnet8", "mobilenet"]) == "resnet8"
    assert closest("zzz", ["resnet8"]) is None
    assert did_you_mean("resnt8", ["resnet8"]) == " (did you mean 'resnet8'?)"
    assert did_you_mean("zzz", ["resnet8"]) == ""
