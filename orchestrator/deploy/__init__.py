"""``orch deploy``: ship images, model and features over SSH and form one Ray cluster.

``plan`` holds the exact remote commands (pure functions), ``payload`` the
files each node needs, ``runner`` the deploy itself, ``remote`` status,
teardown and the head-container helpers ``orch bench --inventory`` uses.
"""

from orchestrator.deploy.local_images import LocalImages, image_tag
from orchestrator.deploy.payload import Payload, build_payload
from orchestrator.deploy.plan import ImageFacts
from orchestrator.deploy.remote import exec_in_head, fetch_run_dir, status, teardown
from orchestrator.deploy.runner import DeployReport, NodeReport, deploy

__all__ = [
    "DeployReport",
    "ImageFacts",
    "LocalImages",
    "NodeReport",
    "Payload",
    "build_payload",
    "deploy",
    "exec_in_head",
    "fetch_run_dir",
    "image_tag",
    "status",
    "teardown",
]
