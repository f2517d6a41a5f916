"""What `orch bench` takes from tune: the stored layout (unless flags override it) and the precision variant.

Kept out of ``bench/runner.py`` so the runner only calls ``tuned_conf`` and
``variant_for``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from orchestrator.tune import layout as _layout
from orchestrator.tune.layout import LOCAL_PROFILE, Identity, Layout, describe, fingerprint, load_tuned, overrides, stale_reason

TUNED_OFF = "off"
TUNED_AUTO = "auto"


def model_sha256(path) -> str:
    """The sha256 of a model file (remembered per path, size and mtime: models are large and asked for often)."""
    from orchestrator.fileio import cached_sha256

    return cached_sha256(path)


def identity_for(conf, inputs) -> tuple[Identity | None, str | None, Any]:
    """(identity of this run's system/profile/model/data, why there is none, the hardware facts)."""
    from orchestrator.bench import config as cfg

    model = model_sha256(inputs.model_path)
    if conf.cluster_nodes:
        deploy = cfg.read_deploy_record()
        chosen = [n for n in deploy.nodes if n.name in conf.cluster_nodes]
        profiles = sorted({n.profile for n in chosen})
        if len(profiles) != 1:
            return None, f"the nodes run {len(profiles)} profiles ({', '.join(profiles)}); a tuned layout is per profile", None
        hardware = sorted({json.dumps({"cpus": n.cpus, "gpus": n.gpus}, sort_keys=True) for n in chosen})
        return Identity(deploy.cluster, profiles[0], fingerprint(hardware), model, inputs.features_key), None, hardware
    if conf.ray_address:
        return None, "a tuned layout is kept for the local machine or a deployed cluster, not for --ray-address", None
    hardware = _layout.local_hardware()  # looked up at call time (tests stand in another machine)
    return Identity(cfg.host_name(), LOCAL_PROFILE, fingerprint(hardware), model, inputs.features_key), None, hardware


def tuned_conf(conf, inputs) -> tuple[Any, dict[str, Any]]:
    """Apply the stored tuned layout to the layout flags not given.

    ``conf.tuned`` is ``off`` (nothing looked up: programmatic runs, tune's own
    candidates), ``auto`` (look it up in this machine's cache) or the JSON of a
    record the controller found (``orch bench --inventory``).

    Returns:
        (the config to run, run.json's ``layout`` entry: source, message, path, layout).
    """
    info: dict[str, Any] = {"source": "flags and defaults", "message": None, "path": None, "tuned": None}
    if conf.tuned == TUNED_OFF:
        return conf, info
    if conf.tuned != TUNED_AUTO:
        sent = json.loads(conf.tuned)
        if "applied" in sent:  # a child run of this bench (submission mode): already decided
            return conf, {**sent["applied"], "echo": False}
    identity, why_not, _ = identity_for(conf, inputs)
    if identity is None:
        info["message"] = f"no tuned layout used: {why_not}"
        return conf, info
    if conf.tuned == TUNED_AUTO:
        record, path = load_tuned(identity.system, identity.profile)
        where = str(path)
    else:
        record = sent.get("record")
        where = sent.get("path") or "the controller's cache"
    info["path"] = where
    if record is None:
        info["message"] = f"no tuned layout for {identity.system} ({identity.profile}) yet: run `orch tune` to measure one"
        conf, info = _decided(conf, info)
        return conf, {**info, "echo": False}  # kept in run.json; not worth a line on every bench
    reason = stale_reason(record, identity)
    if reason:
        info["message"] = f"the tuned layout in {where} is ignored: {reason}; run `orch tune` again"
        return _decided(conf, info)
    layout = Layout.from_json(record["layout"])
    changes = overrides(layout, set(conf.given), cluster=bool(conf.cluster_nodes))
    info.update(source="tuned", message=describe(record, where, changes, set(conf.given)), tuned=dataclasses.asdict(layout))
    return _decided(conf.replace(**changes), info)


def _decided(conf, info: dict[str, Any]):
    """The config with the decision in it, so the child runs of one bench reuse it without a second look-up."""
    return conf.replace(tuned=json.dumps({"applied": info})), {**info, "echo": True}


def controller_record(system: str, profile: str) -> str:
    """What the controller sends to the driver of ``orch bench --inventory``: the stored record for (cluster, profile)."""
    record, path = load_tuned(system, profile)
    if record is not None:
        record = {k: v for k, v in record.items() if k != "tried"}  # the driver needs the layout and identity only
    return json.dumps({"record": record, "path": str(path)})


def variant_for(conf, inputs):
    """The model variant this run's precision asks for, built (or found) on this node.

    Raises:
        InputError: the precision does not fit the backend.
        ModelError: the variant cannot be built.
    """
    from orchestrator.models.precision import check_precision, prepare_variant

    if conf.backend != "auto":
        check_precision(conf.precision, conf.backend)
    features = None
    if conf.precision not in ("fp32", "fp16"):
        from orchestrator.squad.library import load_features

        features = load_features(inputs.dataset_path, inputs.vocab_path)
    return prepare_variant(inputs.model_path, conf.precision, features=features)
