"""The hardware catalog: every backend and every image profile orch knows, declared once.

A *backend* is an inference runtime (``orchestrator.backends``); its entry
says how to import it, what the submission calls it, which package's version
names it, and what it can do (variable sequence lengths, one worker per GPU,
compiling its engines before loadgen's clock starts).

A *profile* is a kind of node: an image (``images/<profile>/``) running one
backend, with what its containers need (``docker run`` flags such as
``--gpus all``) and whether the node must have GPUs.

Everything else derives from these two tables: the inventory's schema and
checks, worker placement on a deployed cluster, ``orch deploy``'s GPU checks
and ``docker run`` flags, the image profiles and their labels, the backend
registry and the system description's framework names. Adding a profile is
one entry in ``PROFILES`` (plus its ``images/<name>/`` folder with the
Dockerfile and requirements that ``orch images build`` reads).

Plain data, no imports beyond the standard library: the controller, the
driver in a container and ``orch --help`` all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import BackendError, InputError


@dataclass(frozen=True)
class BackendSpec:
    """One inference runtime.

    Attributes:
        name: the ``--backend`` value and registry key.
        impl: ``module:Class`` of its ``orchestrator.backends.base.Backend``,
            imported only when the backend is asked for.
        framework: what the MLPerf system description calls it.
        package: the distribution whose version names the framework
            (``onnxruntime-gpu`` for the CUDA build).
        module: the module it imports (checked before Ray starts).
        install_hint: what to install when that module is missing.
        variable_seq_length: takes batches shorter than 384 tokens, so padding
            removal applies (a model exported for one fixed length still turns
            it off at run time: ``Backend.fixed_seq_length``).
        gpus: runs on GPUs: one worker per GPU of a node.
        warmup_compile: compiles engines lazily unless told to compile them
            in ``load`` (``Backend.eager``); workers do, before loadgen's
            clock starts.
        options: takes options after a colon (``synthetic:rate=9500,per_node=8``).
        any_profile: needs no runtime of an image, so it runs on every profile.
    """

    name: str
    impl: str
    framework: str
    package: str
    module: str
    install_hint: str
    variable_seq_length: bool = True
    gpus: bool = False
    warmup_compile: bool = False
    options: bool = False
    any_profile: bool = False


@dataclass(frozen=True)
class ProfileSpec:
    """One kind of node: an image running one backend.

    Attributes:
        name: the inventory's ``profile``, the folder ``images/<name>/`` and
            the image repository ``orch/<name>``.
        backend: the backend its image runs (a key of ``BACKENDS``).
        accelerator: ``cpu`` or ``cuda``: what the node needs (an image label).
        description: one line for ``orch images list``.
        gpus: the node must have GPUs (inventory ``gpus >= 1``; deploy checks
            ``nvidia-smi``, Docker's nvidia runtime and the GPUs the container sees).
        container_flags: extra ``docker run`` arguments for its containers.
    """

    name: str
    backend: str
    accelerator: str
    description: str
    gpus: bool = False
    container_flags: tuple[str, ...] = ()

    @property
    def repository(self) -> str:
        """The Docker repository of this profile's images."""
        return f"orch/{self.name}"


BACKENDS: dict[str, BackendSpec] = {
    b.name: b
    for b in (
        BackendSpec(
            "onnxruntime", "orchestrator.backends.onnxruntime:OnnxRuntimeBackend",
            framework="ONNX Runtime", package="onnxruntime", module="onnxruntime",
            install_hint="pip install 'orch[cpu]'",
        ),
        BackendSpec(
            "onnxruntime-cuda", "orchestrator.backends.onnxruntime:OnnxRuntimeCudaBackend",
            framework="ONNX Runtime (CUDA)", package="onnxruntime-gpu", module="onnxruntime",
            install_hint="pip install 'orch[cuda]' (onnxruntime-gpu, on a machine with an NVIDIA GPU)",
            gpus=True,
        ),
        BackendSpec(
            "deepsparse", "orchestrator.backends.deepsparse:DeepSparseBackend",
            framework="DeepSparse", package="deepsparse", module="deepsparse",
            install_hint="pip install 'orch[deepsparse]' (CPython <= 3.11, x86_64 or aarch64)",
            warmup_compile=True,
        ),
        # Modelled answer times, no inference: CPU nodes stand in for accelerators orch does not have.
        BackendSpec(
            "synthetic", "orchestrator.backends.synthetic:SyntheticBackend",
            framework="synthetic (no inference)", package="orch", module="",
            install_hint="pip install orch (it needs no runtime)", options=True, any_profile=True,
        ),
    )
}  # fmt: skip

PROFILES: dict[str, ProfileSpec] = {
    p.name: p
    for p in (
        ProfileSpec("cpu-onnxruntime", "onnxruntime", "cpu", "CPU nodes, ONNX Runtime"),
        ProfileSpec(
            "cuda-onnxruntime", "onnxruntime-cuda", "cuda",
            "NVIDIA GPU nodes, ONNX Runtime CUDA (CUDA/cuDNN from NVIDIA wheels; driver from the host)",
            gpus=True, container_flags=("--gpus", "all"),
        ),
        ProfileSpec("cpu-deepsparse", "deepsparse", "cpu", "CPU nodes, DeepSparse 1.8.0 (numpy<2)"),
    )
}  # fmt: skip

# What runs when nothing is named: `orch bench` without an inventory, and the sandbox's nodes.
DEFAULT_BACKEND = "onnxruntime"
DEFAULT_PROFILE = "cpu-onnxruntime"


def backend_spec(name: str) -> BackendSpec:
    """The catalog entry of backend ``name``.

    Raises:
        BackendError: unknown name; the message lists the valid ones.
    """
    spec = BACKENDS.get(name.partition(":")[0])  # "synthetic:rate=..." is the synthetic backend
    if spec is None:
        raise BackendError(f"unknown backend {name!r} (--backend)", hint=f"choose one of: {', '.join(sorted(BACKENDS))}")
    return spec


def profile_spec(name: str) -> ProfileSpec:
    """The catalog entry of profile ``name``.

    Raises:
        InputError: unknown name; the message lists the valid ones.
    """
    spec = PROFILES.get(name)
    if spec is None:
        raise InputError(f"unknown image profile {name!r} (--profile)", hint=f"choose one of: {', '.join(PROFILES)}")
    return spec


def profile_backend(profile: str) -> BackendSpec:
    """The backend a profile's image runs."""
    return backend_spec(profile_spec(profile).backend)


def runs_backend(profile: str, backend: str) -> bool:
    """True when a node of ``profile`` runs ``backend`` (``auto``: its own, always)."""
    if backend == "auto":
        return True
    spec = BACKENDS.get(backend.partition(":")[0])
    return bool(spec and spec.any_profile) or (profile in PROFILES and PROFILES[profile].backend == backend)


def check_catalog() -> None:
    """Every profile names a known backend and a known accelerator kind; a GPU profile has GPU flags.

    Raises:
        AssertionError: the catalog contradicts itself (a bug in this file).
    """
    for profile in PROFILES.values():
        assert profile.backend in BACKENDS, f"profile {profile.name}: unknown backend {profile.backend}"
        assert profile.accelerator in ("cpu", "cuda"), f"profile {profile.name}: unknown accelerator"
        assert profile.gpus == BACKENDS[profile.backend].gpus, f"profile {profile.name}: gpus differs from its backend"
