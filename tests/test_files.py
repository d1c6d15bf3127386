"""Atomic writes (lightning_llm.files): a reader sees the old file or the new one, never a part."""

from __future__ import annotations

import pytest

from lightning_llm.files import atomic_path, temporary_path, write_json_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"step": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"step": 2, "half')
        raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "step": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_temporary_file_is_hidden_beside_the_target_and_per_process(tmp_path):
    tmp = temporary_path(tmp_path / "model.ckpt")
    assert tmp.parent == tmp_path and tmp.name.startswith(".model.ckpt.tmp") and tmp.name[len(".model.ckpt.tmp") :]
    with atomic_path(tmp_path / "model.ckpt") as path:
        path.write_bytes(b"weights")
        assert not (tmp_path / "model.ckpt").exists(), "the target appears only once it is whole"
    assert (tmp_path / "model.ckpt").read_bytes() == b"weights"
