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
