import pytest

from glora.spaces import Option, OptionError, option_cost, parse_option


@pytest.mark.parametrize("text", ["LoRA_8", "LoRA_1", "vector", "constant", "none"])
def test_option_round_trip(text):
    assert str(parse_option(text)) == text


@pytest.mark.parametrize("bad", ["lora_8", "LoRA_0", "LoRA_", "LoRA_x", "Vector", "", 8, None])
def test_bad_option_is_rejected(bad):
    with pytest.raises(OptionError):
        parse_option(bad)


def test_costs_follow_design():
    out_f, in_f = 7, 5
    assert option_cost("A", Option("lora", 4), out_f, in_f) == 4 * (7 + 5)
    assert option_cost("B", Option("vector"), out_f, in_f) == 7
    assert option_cost("B", Option("constant"), out_f, in_f) == 1
    assert option_cost("C", Option("lora", 2), out_f, in_f) == 2 * (5 + 1)
    assert option_cost("C", Option("vector"), out_f, in_f) == 5
    assert option_cost("D", Option("vector"), out_f, in_f) == 7
    assert option_cost("E", Option("constant"), out_f, in_f) == 1
    assert option_cost("E", Option("none"), out_f, in_f) == 0
