"""deploy / status / teardown through the recording transport and a fake cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.deploy import deploy, status, teardown
from orchestrator.deploy.bundle import Bundle, bundle_file
from orchestrator.errors import InputError, RemoteError
from orchestrator.inventory import parse_inventory
from orchestrator.ssh import NodeFailures

from .deploy_fake import IMAGE, FakeCluster, FakeImages, FakeNode, redact


def make_inventory(n=2, **node1):
    nodes = [{"name": f"n{i}", "host": f"10.77.0.{i + 1}", "profile": "cpu-onnxruntime", "cpus": 2} for i in range(1, n + 1)]
    nodes[0].update(node1)
    return parse_inventory(
        {"cluster": "lab", "head": "n1", "images": {"cpu-onnxruntime": IMAGE.tag}, "nodes": nodes}, path=Path("c.yaml")
    )


@pytest.fixture
def payload(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"m" * 300)
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"[PAD]\n")
    data = tmp_path / "dev.json"
    data.write_bytes(b"{}")
    files = tuple(bundle_file(p) for p in (model, vocab, data))
    return Bundle(files, "demo", files[0].relative, files[1].relative, files[2].relative)


def cluster(n=2):
    return FakeCluster({f"n{i}": FakeNode(ip=f"10.77.0.{i + 1}") for i in range(1, n + 1)}, head="n1")


def test_cold_deploy_exact_commands_then_warm_deploy_changes_nothing(payload):
    inv = make_inventory()
    fake = cluster()
    images = FakeImages()
    report = deploy(inv, fake.transport, images, bundle=payload, sleep=lambda s: None)
    m, v, d = (f.relative for f in payload.files)
    n2 = redact(fake.transport.commands("n2"))
    assert n2 == [
        # Facts: read-only.
        "uname -m",
        "docker version --format '{{.Server.Version}}'",
        "docker info --format '{{.DockerRootDir}}'",
        'd=/var/lib/orch; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; df -P -B1 "$d" /var/lib/docker',
        "docker image inspect --format '{{.Id}}' orch/cpu-onnxruntime:latest",
        "cat /var/lib/orch/.orch/manifest.json",
        f"find /var/lib/orch/{m} /var/lib/orch/{v} /var/lib/orch/{d} -maxdepth 0 -type f -printf '%s %p\\n' 2>/dev/null; true",
        "cat /var/lib/orch/deploy.json",
        "command -v iptables",
        "iptables -w -S INPUT",
        "iptables -w -S ORCH-lab",
        "docker inspect --type container --format '{{.State.Status}} {{.Image}}' orch-lab-n2",
        # The plan's steps: ship the image, copy the files, start the container...
        "mkdir -p /var/lib/orch/.orch",
        "docker load",
        "docker image inspect --format '{{.Id}}' orch/cpu-onnxruntime:latest",
        f"printf '%s %s\\n' {IMAGE.id} orch/cpu-onnxruntime:latest >> /var/lib/orch/.orch/images",
        "mkdir -p /var/lib/orch/.orch /var/lib/orch/files",
        "docker run -d --name orch-lab-n2 --label org.orch.cluster=lab --label org.orch.node=n2 --network host "
        "--shm-size 2g --restart no -e ORCH_CACHE_DIR=/data/cache -e ORCH_NODE=n2 -e RAY_USAGE_STATS_ENABLED=0 "
        "-v /var/lib/orch:/data --entrypoint sleep orch/cpu-onnxruntime:latest infinity",
        # ... then the firewall, in place before Ray listens ...
        "iptables -w -N ORCH-lab && iptables -w -A ORCH-lab -s 127.0.0.0/8 -j ACCEPT "
        "&& iptables -w -A ORCH-lab -s 10.77.0.2/32 -j ACCEPT && iptables -w -A ORCH-lab -s 10.77.0.3/32 -j ACCEPT "
        "&& iptables -w -A ORCH-lab -j DROP",
        "iptables -w -I INPUT 1 -p tcp -m multiport --dports 6379,8076,8077,8078,8079,8081,52365,10002:10999 -j ORCH-lab",
        # ... then Ray, once the head runs.
        "docker exec orch-lab-n2 ray start --address=10.77.0.2:6379 --node-ip-address=10.77.0.3 "
        "--object-manager-port=8076 --node-manager-port=8077 --min-worker-port=10002 --max-worker-port=10999 "
        "--dashboard-agent-grpc-port=8078 --dashboard-agent-listen-port=52365 --runtime-env-agent-port=8079 "
        "--metrics-export-port=8081 --num-gpus=0 --disable-usage-stats --num-cpus=2",
    ]
    puts = sorted(c.remote for c in fake.transport.calls if c.kind == "put" and c.host == "n2")
    assert puts == sorted(
        [f"/var/lib/orch/{m}", f"/var/lib/orch/{v}", f"/var/lib/orch/{d}",
         "/var/lib/orch/.orch/manifest.json", "/var/lib/orch/deploy.json"]
    )
    head = redact(fake.transport.commands("n1"))
    assert head[-2:] == [
        "docker exec orch-lab-n1 ray start --head --port=6379 --node-ip-address=10.77.0.2 --object-manager-port=8076 "
        "--node-manager-port=8077 --min-worker-port=10002 --max-worker-port=10999 --dashboard-agent-grpc-port=8078 "
        "--dashboard-agent-listen-port=52365 --runtime-env-agent-port=8079 --metrics-export-port=8081 --num-gpus=0 "
        "--disable-usage-stats --num-cpus=2 --include-dashboard=false",
        # every node joined with its resources: one query suffices
        "docker exec orch-lab-n1 python -c SCRIPT 10.77.0.2 6379",
    ]
    r2 = report.nodes["n2"]
    assert (r2.image, r2.image_bytes, r2.files_sent, r2.files_bytes, r2.container, r2.ray) == (
        "shipped", 3000, 3, payload.total_bytes, "started", "started"
    )
    assert report.nodes["n1"].ray == "started" and report.left_out == {}
    assert {r.firewall for r in report.nodes.values()} == {"applied"}
    assert set(report.ray_nodes) == {"10.77.0.2", "10.77.0.3"}

    # Warm: nothing changed, so nothing is shipped, started or stopped.
    before = len(fake.transport.calls)
    warm = deploy(inv, fake.transport, images, bundle=payload, sleep=lambda s: None)
    calls = fake.transport.calls[before:]
    assert not [c for c in calls if c.kind in ("put", "stream_in")]
    changing = ("docker run", "docker rm", "docker load", "printf ", "mkdir ")
    assert not [c.command for c in calls if c.command and c.command.startswith(changing)]
    assert not [c.command for c in calls if c.command and ("ray start" in c.command or "ray stop" in c.command)]
    # The firewall is only read (chain, INPUT, then -C for the jump), never rewritten.
    assert [c.command for c in calls if c.host == "n2" and c.command.startswith("iptables")] == [
        "iptables -w -S INPUT",
        "iptables -w -S ORCH-lab",
        "iptables -w -C INPUT -p tcp -m multiport --dports 6379,8076,8077,8078,8079,8081,52365,10002:10999 -j ORCH-lab",
    ]
    assert {r.firewall for r in warm.nodes.values()} == {"kept"}
    assert images.saved == 2
    assert {(r.image, r.container, r.ray, r.files_sent) for r in warm.nodes.values()} == {("kept", "kept", "kept", 0)}


def test_changed_model_file_is_the_only_thing_reshipped(payload, tmp_path):
    inv = make_inventory()
    fake = cluster()
    deploy(inv, fake.transport, FakeImages(), bundle=payload, sleep=lambda s: None)
    model = payload.files[0].local
    model.write_bytes(b"M" * 301)
    changed = Bundle((bundle_file(model),) + payload.files[1:], "demo", bundle_file(model).relative,
                      payload.vocab_file, payload.dataset_file)
    before = len(fake.transport.calls)
    report = deploy(inv, fake.transport, FakeImages(), bundle=changed, sleep=lambda s: None)
    sent = [c.remote for c in fake.transport.calls[before:] if c.kind == "put" and c.host == "n2"]
    assert sent[0].endswith("model.onnx") and len(sent) == 3  # model, manifest, deploy.json
    assert report.nodes["n2"].files_sent == 1 and report.nodes["n2"].container == "kept"


def test_new_image_replaces_container_and_restarts_ray_everywhere(payload):
    inv = make_inventory()
    fake = cluster()
    deploy(inv, fake.transport, FakeImages(), bundle=None, sleep=lambda s: None)
    import dataclasses

    new = dataclasses.replace(IMAGE, id="sha256:" + "b" * 64)
    fake.image = new
    report = deploy(inv, fake.transport, FakeImages(new), bundle=None, sleep=lambda s: None)
    assert {r.container for r in report.nodes.values()} == {"replaced"}
    assert {r.ray for r in report.nodes.values()} == {"started"}


def test_worker_restarted_when_its_raylet_died(payload):
    inv = make_inventory(3)
    fake = cluster(3)
    deploy(inv, fake.transport, FakeImages(), sleep=lambda s: None)
    fake.nodes["n3"].ray = ""
    before = len(fake.transport.calls)
    report = deploy(inv, fake.transport, FakeImages(), sleep=lambda s: None)
    starts = [c.host for c in fake.transport.calls[before:] if c.command and "ray start" in c.command]
    assert starts == ["n3"]
    assert (report.nodes["n2"].ray, report.nodes["n3"].ray) == ("kept", "started")


def test_preflight_reports_every_failing_node_in_one_line():
    inv = make_inventory(3)
    fake = cluster(3)
    fake.nodes["n2"].arch = "aarch64"
    fake.transport.unreachable.add("n3")
    with pytest.raises(NodeFailures) as info:
        deploy(inv, fake.transport, FakeImages(), sleep=lambda s: None)
    message = str(info.value)
    assert message.startswith("preflight failed on 2 of 3 nodes")
    # Each node's own exception is kept, and the CLI prints one line per node.
    assert info.value.hosts == ["n2", "n3"] and all(isinstance(e, RemoteError) for e in info.value.errors.values())
    assert [line.split(":")[:2] for line in info.value.lines()] == [["preflight", " node n2"], ["preflight", " node n3 (fake)"]]
    assert "node n2: CPU architecture aarch64 does not match image orch/cpu-onnxruntime:latest (amd64)" in message
    assert "node n3" in message and "connection refused" in message
    assert not [c for c in fake.transport.calls if c.kind == "stream_in"]


def test_skip_unreachable_goes_on_and_names_the_left_out_node():
    inv = make_inventory(3)
    fake = cluster(3)
    fake.transport.unreachable.add("n3")
    report = deploy(inv, fake.transport, FakeImages(), skip_unreachable=True, sleep=lambda s: None)
    assert list(report.nodes) == ["n1", "n2"] and "n3" in report.left_out
    fake2 = cluster(2)
    fake2.transport.unreachable.add("n1")
    with pytest.raises(InputError, match="head node n1 is unreachable"):
        deploy(make_inventory(2), fake2.transport, FakeImages(), skip_unreachable=True, sleep=lambda s: None)


def test_not_enough_disk_fails_before_shipping():
    fake = cluster()
    fake.nodes["n2"].free = 500
    with pytest.raises(NodeFailures, match="node n2: 0.0 GB free in /var/lib/docker"):
        deploy(make_inventory(), fake.transport, FakeImages(), sleep=lambda s: None)


def test_ray_join_timeout_names_the_missing_node():
    fake = cluster()
    original = fake.respond

    def worker_never_joins(host, command):
        result = original(host, command)
        if host == "n2" and "ray start" in command:
            fake.nodes["n2"].ray = ""
        return result

    fake.transport.responder = worker_never_joins
    with pytest.raises(RemoteError, match="Ray cluster incomplete after 0 s: missing or wrong resources on n2"):
        deploy(make_inventory(), fake.transport, FakeImages(), ray_timeout=0, sleep=lambda s: None)


def test_status_rows_and_teardown_commands(payload):
    inv = make_inventory()
    fake = cluster()
    deploy(inv, fake.transport, FakeImages(), bundle=payload, sleep=lambda s: None)
    rows = {r.name: r for r in status(inv, fake.transport)}
    assert rows["n2"].reachable and rows["n2"].container == "running" and rows["n2"].container_current
    assert rows["n2"].ray_alive and rows["n2"].resources == {"CPU": 2.0, "memory": 1e9}
    fake.nodes["n2"].containers["someone-elses"] = ["running", "sha256:c", None]  # not orch's: never touched
    fake.nodes["n2"].input.append(["-j", "OTHER"])  # nor is a rule orch did not add

    before = len(fake.transport.calls)
    results = teardown(inv, fake.transport, images=True, data=True)
    assert all(r.ok for r in results.values())
    n2 = [c.command for c in fake.transport.calls[before:] if c.host == "n2"]
    assert n2 == [
        "docker ps -a --filter label=org.orch.cluster=lab --format '{{.Names}}'",
        "docker rm -f orch-lab-n2",
        # Only orch's jump and chain go; what else is in INPUT stays.
        "iptables -w -S INPUT",
        "iptables -w -S ORCH-lab",
        "iptables -w -D INPUT -p tcp -m multiport --dports 6379,8076,8077,8078,8079,8081,52365,10002:10999 -j ORCH-lab",
        "iptables -w -F ORCH-lab && iptables -w -X ORCH-lab",
        "cat /var/lib/orch/.orch/images",
        "docker image inspect --format '{{.Id}}' orch/cpu-onnxruntime:latest",
        "docker image rm orch/cpu-onnxruntime:latest",
        "test -f /var/lib/orch/.orch/manifest.json",
        "rm -rf -- /var/lib/orch/cache /var/lib/orch/files /var/lib/orch/runs /var/lib/orch/deploy.json "
        "/var/lib/orch/.orch && rmdir --ignore-fail-on-non-empty /var/lib/orch",
    ]
    assert results["n2"].value.images == ["orch/cpu-onnxruntime:latest"] and results["n2"].value.data
    assert list(fake.nodes["n2"].containers) == ["someone-elses"]
    assert results["n2"].value.firewall and fake.nodes["n2"].chains == {} and fake.nodes["n2"].input == [["-j", "OTHER"]]


def test_teardown_keeps_an_image_whose_tag_now_names_another_image():
    inv = make_inventory(1)
    fake = FakeCluster({"n1": FakeNode(ip="10.77.0.2")}, head="n1")
    deploy(inv, fake.transport, FakeImages(), sleep=lambda s: None)
    fake.nodes["n1"].images[IMAGE.tag] = "sha256:" + "f" * 64  # rebuilt by someone else since
    results = teardown(inv, fake.transport, images=True)
    assert results["n1"].value.images == []
    assert not [c for c in fake.transport.commands("n1") if c.startswith("docker image rm")]


def test_exec_in_head_streams_and_quotes(capsys):
    from orchestrator.deploy import exec_in_head
    from orchestrator.ssh import RecordingTransport, Result

    inv = make_inventory()
    t = RecordingTransport(default=Result(0, "loadgen done\n", ""))
    result = exec_in_head(inv, ["orch", "bench", "--model", "it's.onnx"], transport=t, env={"ORCH_X": "1 2"})
    assert result.ok and capsys.readouterr().out == "loadgen done\n"
    assert t.commands() == ["docker exec -e 'ORCH_X=1 2' orch-lab-n1 orch bench --model 'it'\"'\"'s.onnx'"]
    assert [c.host for c in t.calls] == ["n1"]


def test_fetch_run_dir_copies_every_file_and_run_json_last(tmp_path):
    from orchestrator.deploy import fetch_run_dir
    from orchestrator.ssh import RecordingTransport, Result

    inv = make_inventory()
    listing = "run.json\nmlperf_log_summary.txt\nsub/x.txt\n"
    t = RecordingTransport(responses={
        "find /var/lib/orch/runs/r1 -type f -printf '%P\\n'": Result(0, listing, ""),
    })
    for name in listing.split():
        t.remote_files[("n1", f"/var/lib/orch/runs/r1/{name}")] = name.encode()
    out = fetch_run_dir(inv, "/data/runs/r1", tmp_path / "r1", transport=t)
    gets = [c.remote for c in t.calls if c.kind == "get"]
    assert gets[-1] == "/var/lib/orch/runs/r1/run.json" and len(gets) == 3
    assert (out / "sub" / "x.txt").read_text() == "sub/x.txt"
    with pytest.raises(RemoteError, match="empty"):
        fetch_run_dir(inv, "/data/runs/none", tmp_path / "x", transport=RecordingTransport())


def cuda_inventory():
    return parse_inventory(
        {"cluster": "lab", "head": "g1", "images": {"cuda-onnxruntime": IMAGE.tag},
         "nodes": [{"name": "g1", "host": "10.77.0.2", "profile": "cuda-onnxruntime", "gpus": 2, "cpus": 2}]},
        path=Path("c.yaml"),
    )


def test_cuda_node_checks_gpus_runtime_and_passes_gpus_to_the_container():
    fake = FakeCluster({"g1": FakeNode(ip="10.77.0.2", gpus=2, nvidia_runtime=True)}, head="g1")
    report = deploy(cuda_inventory(), fake.transport, FakeImages(), ray_timeout=1, sleep=lambda s: None)
    commands = fake.transport.commands("g1")
    assert "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits" in commands
    assert "docker info --format '{{json .Runtimes}}'" in commands
    run = next(c for c in commands if c.startswith("docker run"))
    assert " --gpus all --entrypoint sleep " in run
    assert "docker exec orch-lab-g1 nvidia-smi -L" in commands
    assert next(c for c in commands if "ray start" in c).endswith(
        "--metrics-export-port=8081 --num-gpus=2 --disable-usage-stats --num-cpus=2 --include-dashboard=false")
    assert report.nodes["g1"].gpus == [{"model": "NVIDIA H100 80GB HBM3", "memory_bytes": 81559 * 2**20}] * 2


@pytest.mark.parametrize(
    "node, message",
    [
        (FakeNode(ip="10.77.0.2", gpus=0, nvidia_runtime=True), "nvidia-smi failed"),
        (FakeNode(ip="10.77.0.2", gpus=1, nvidia_runtime=True), "gpus: 2 but nvidia-smi lists 1"),
        (FakeNode(ip="10.77.0.2", gpus=2, nvidia_runtime=False), "Docker has no nvidia runtime"),
        (FakeNode(ip="10.77.0.2", gpus=2, nvidia_runtime=True, gpus_in_container=0), "the container sees 0 GPU"),
    ],
)
def test_cuda_node_problems_are_named(node, message):
    fake = FakeCluster({"g1": node}, head="g1")  # the fake finds no toolkit hook either
    with pytest.raises(NodeFailures, match=message) as info:
        deploy(cuda_inventory(), fake.transport, FakeImages(), ray_timeout=1, sleep=lambda s: None)
    assert isinstance(info.value.errors["g1"], RemoteError)


def test_restarted_worker_must_rejoin_with_a_new_ray_id():
    """n2's container vanished; the head still lists its dead raylet for a while: deploy waits for the new one."""
    import json

    inv = make_inventory()
    fake = cluster()
    deploy(inv, fake.transport, FakeImages(), sleep=lambda s: None)
    old_id = fake.nodes["n2"].ray_id
    fake.nodes["n2"].containers.clear()  # removed behind orch's back
    fake.nodes["n2"].ray = ""
    original = fake.respond
    stale_answers = {"left": 3}

    def head_lags(host, command):
        result = original(host, command)
        if "python -c" in command and stale_answers["left"] > 0:
            stale_answers["left"] -= 1
            data = json.loads(result.stdout)
            data["nodes"] = [n for n in data["nodes"] if n["ip"] != "10.77.0.3"] + [
                {"ip": "10.77.0.3", "alive": True, "node_id": old_id, "resources": {"CPU": 2.0}}
            ]
            return type(result)(0, json.dumps(data) + "\n", "")
        return result

    fake.transport.responder = head_lags
    before = len(fake.transport.calls)
    report = deploy(inv, fake.transport, FakeImages(), sleep=lambda s: None)
    queries = [c for c in fake.transport.calls[before:] if c.command and "python -c" in c.command]
    assert (report.nodes["n1"].ray, report.nodes["n2"].container, report.nodes["n2"].ray) == ("kept", "started", "started")
    assert len(queries) == 4  # the first (before starting) and two more stale answers, then the new raylet
    assert report.ray_nodes["10.77.0.3"]["node_id"] != old_id
