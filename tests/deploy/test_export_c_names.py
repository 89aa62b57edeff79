"""export-c refuses names and alignments that would give a header that does not compile (issue 19 part 5)."""
from __future__ import annotations

import pytest
from graphs import lut_conv_graph

from edgemerge import emm
from edgemerge.deploy.export_c import MAX_ALIGNMENT, ExportError, export_c_header


@pytest.fixture()
def model(tmp_path):
    path = tmp_path / "m.emm"
    emm.write_emm(lut_conv_graph(), path)
    return path


@pytest.mark.parametrize("output, name, words", [
    ("int.h", None, "C keyword"), ("while.h", None, "C keyword"), ("ok.h", "static", "C keyword"),
    ("ok.h", "a-b", "not a C identifier"), ("ok.h", "9lives", "not a C identifier"),
    ("ok.h", "__reserved", "reserved"), ("ok.h", "x" * 64, "63"),
])
def test_names_that_would_not_compile_are_refused(tmp_path, model, output, name, words):
    with pytest.raises(ExportError, match=words):
        export_c_header(model, tmp_path / output, name=name)
    assert not (tmp_path / output).exists()


@pytest.mark.parametrize("alignment", [1 << 40, 2 * MAX_ALIGNMENT, 32, 96])
def test_alignments_outside_64_to_4096_or_not_a_power_of_two_are_refused(tmp_path, model, alignment):
    with pytest.raises(ExportError, match="power of two"):
        export_c_header(model, tmp_path / "ok.h", alignment=alignment)


def test_the_largest_alignment_and_a_derived_name_are_fine(tmp_path, model):
    result = export_c_header(model, tmp_path / "model-data.v1.h", alignment=MAX_ALIGNMENT)
    assert result["name"] == "model_data" and result["alignment"] == MAX_ALIGNMENT
