"""``orch deploy``: ship images, model and features over SSH and form one Ray cluster.

Deploy is facts -> plan -> steps: ``facts`` reads each node (read-only, in
parallel), ``plan`` turns the facts into typed steps per node (pure),
``runner`` executes them. ``commands`` holds the exact remote commands and
their parsers, ``container`` the one ``docker exec`` into orch's container,
``bundle`` the files each node needs, ``remote`` status, teardown and the
head-container helpers ``orch bench --inventory`` uses.
"""

from orchestrator.deploy.bundle import Bundle, build_bundle
from orchestrator.deploy.facts import ImageFacts
from orchestrator.deploy.local_images import LocalImages, image_tag
from orchestrator.deploy.plan import DeployPlan, plan_deploy
from orchestrator.deploy.remote import exec_in_head, fetch_run_dir, status, teardown
from orchestrator.deploy.runner import DeployReport, NodeReport, Progress, deploy, execute, prepare

__all__ = [
    "Bundle",
    "DeployPlan",
    "DeployReport",
    "ImageFacts",
    "LocalImages",
    "NodeReport",
    "Progress",
    "build_bundle",
    "deploy",
    "exec_in_head",
    "execute",
    "fetch_run_dir",
    "image_tag",
    "plan_deploy",
    "prepare",
    "status",
    "teardown",
]
