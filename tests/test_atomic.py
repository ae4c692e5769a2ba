import pytest

from projected_grpo.atomic import atomic_path, write_json


def test_write_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "f.json"
    write_json(target, {"a": 1})
    assert target.read_text() == '{"a": 1}'
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("boom")
    assert target.read_text() == '{"a": 1}'  # untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]  # no temp left behind
