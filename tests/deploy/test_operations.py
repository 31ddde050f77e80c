"""The README's operation table is the one mpsctl.search.operations renders (issue 19);
tests/deploy/test_vocabulary.py exports a model with the ops of each row."""

from __future__ import annotations

from pathlib import Path

from mpsctl.search import graph
from mpsctl.search.operations import markdown_table, operations

README = Path(__file__).parents[2] / "README.md"


def test_readme_table_is_generated_from_the_registry() -> None:
    text = README.read_text()
    start, end = "<!-- ops-table:start -->\n", "\n<!-- ops-table:end -->"
    assert start in text and end in text
    table = text.split(start, 1)[1].split(end, 1)[0]
    assert table == markdown_table(), "run `python scripts/op_table.py` to update README.md"


def test_every_form_the_exporters_know_is_in_the_table() -> None:
    listed = " ".join(" ".join(op.forms) for op in operations())
    for module in graph.ELEMENTWISE_MODULES:
        assert f"nn.{module.__name__}" in listed
    for method in [*graph.ELEMENTWISE_METHODS, *graph.TRANSPOSE_METHODS, *graph.SPLIT_METHODS,
                   *graph.MUL_METHODS, *graph.RESHAPE_METHODS]:
        assert f".{method}()" in listed
    assert "torch.cat" in listed and "F.max_pool2d" in listed
