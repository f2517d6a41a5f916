"""deploy with one image per profile: each node gets its own, and a Python/Ray mix fails before any node is touched."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orchestrator.deploy import deploy
from orchestrator.errors import InputError
from orchestrator.inventory import parse_inventory

from .deploy_fake import IMAGE, FakeCluster, FakeNode

ORT = IMAGE
DEEPSPARSE = dataclasses.replace(IMAGE, tag="orch/cpu-deepsparse:0.1.0-x", id="sha256:" + "d" * 64)


class ProfileImages:
    """Image facts per tag (FakeImages knows one image only)."""

    def __init__(self, *images):
        self.by_tag = {i.tag: i for i in images}
        self.saved = 0

    def facts(self, tag, profile=None):
        return self.by_tag[tag]

    def save(self, tag):
        self.saved += 1
        return iter([b"tar"])


def mixed_inventory():
    nodes = [
        {"name": "n1", "host": "10.77.0.2", "profile": "cpu-deepsparse", "cpus": 2},
        {"name": "n2", "host": "10.77.0.3", "profile": "cpu-onnxruntime", "cpus": 2},
    ]
    images = {"cpu-deepsparse": DEEPSPARSE.tag, "cpu-onnxruntime": ORT.tag}
    return parse_inventory({"cluster": "lab", "head": "n1", "images": images, "nodes": nodes}, path=Path("c.yaml"))


def mixed_cluster():
    # Each node already holds its profile's image, so nothing is shipped.
    return FakeCluster(
        {
            "n1": FakeNode(ip="10.77.0.2", images={DEEPSPARSE.tag: DEEPSPARSE.id}),
            "n2": FakeNode(ip="10.77.0.3", images={ORT.tag: ORT.id}),
        },
        head="n1",
    )


def test_each_node_runs_its_profiles_image():
    fake = mixed_cluster()
    report = deploy(mixed_inventory(), fake.transport, ProfileImages(DEEPSPARSE, ORT), sleep=lambda s: None)
    assert {r.image for r in report.nodes.values()} == {"kept"}
    runs = {c.host: c.command for c in fake.transport.calls if c.command.startswith("docker run")}
    assert DEEPSPARSE.tag in runs["n1"] and ORT.tag not in runs["n1"]
    assert ORT.tag in runs["n2"] and DEEPSPARSE.tag not in runs["n2"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"org.orch.python": "3.12", "org.orch.ray": "2.60.0"}, "Python 3.12, Ray 2.60.0"),
        ({"org.orch.python": "3.11", "org.orch.ray": "2.9.0"}, "Python 3.11, Ray 2.9.0"),
        ({}, "has no org.orch.python/org.orch.ray labels"),
    ],
)
def test_images_that_mix_python_or_ray_fail_before_any_node_is_touched(labels, message):
    fake = mixed_cluster()
    other = dataclasses.replace(DEEPSPARSE, labels=labels)
    with pytest.raises(InputError) as err:
        deploy(mixed_inventory(), fake.transport, ProfileImages(other, ORT), sleep=lambda s: None)
    text = str(err.value)
    assert message in text and DEEPSPARSE.tag in text and "\n" not in text
    assert fake.transport.calls == []
