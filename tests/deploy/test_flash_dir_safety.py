"""flash --to dir: on hostile folders (issue 19 part 3, issue 18 part 3): the leftover clean-up removes only names
flash itself creates, a name that is a folder or FIFO is refused, a read-only folder is reported as read-only."""
from __future__ import annotations

import os

import pytest
from graphs import two_task_graph

from edgemerge import emm
from edgemerge.deploy.flash import TMP_MARK, DirTarget, FlashError, flash


@pytest.fixture()
def model(tmp_path):
    path = tmp_path / "merged.emm"
    emm.write_emm(two_task_graph(), path)
    return path


def test_a_star_name_removes_no_other_models_temporary(tmp_path, model):
    card = tmp_path / "card"
    card.mkdir()
    others = [card / f".other.emm{TMP_MARK}0123456789ab", card / f".other.emm{TMP_MARK}abc123"]
    for p in others:
        p.write_bytes(b"another model, being written")
    ours = card / f".*{TMP_MARK}0123456789ab"   # what an interrupted `--name '*'` flash leaves
    ours.write_bytes(b"ours")
    result = flash(model, DirTarget(card), name="*")
    assert all(p.read_bytes() == b"another model, being written" for p in others)
    assert not ours.exists() and result["leftovers_removed"] == 1
    assert (card / "*").read_bytes() == model.read_bytes()


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_final_name_that_is_not_a_regular_file_is_refused(tmp_path, model, kind):
    card = tmp_path / "card"
    card.mkdir()
    if kind == "folder":
        (card / "merged.emm").mkdir()
    else:
        os.mkfifo(card / "merged.emm")
    with pytest.raises(FlashError, match="not a regular file"):
        flash(model, DirTarget(card))
    assert sorted(p.name for p in card.iterdir()) == ["merged.emm"]


def test_a_read_only_folder_is_reported_as_read_only(tmp_path, model, monkeypatch):
    card = tmp_path / "card"
    card.mkdir()
    real = os.statvfs(card)
    values = list(real)
    values[8] = real.f_flag | os.ST_RDONLY     # f_flag: what a read-only mount reports
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result(values))
    with pytest.raises(FlashError, match="read-only") as info:
        flash(model, DirTarget(card))
    assert "full" not in str(info.value)
