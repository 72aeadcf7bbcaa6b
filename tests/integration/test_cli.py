"""The CLI's topology commands against a real broker."""

import subprocess
import sys
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "disrouter.cli", *args], capture_output=True, text=True, timeout=120)


async def test_topics_create_makes_every_topic_with_the_partitions(kafka_bootstrap, tmp_path):
    topology = (ROOT / "examples" / "tree.yaml").read_text().replace("namespace: tree", "namespace: clitree")
    path = tmp_path / "tree.yaml"
    path.write_text(topology)
    first = _cli("topics", "create", str(path), "--bootstrap", kafka_bootstrap, "--partitions", "3")
    assert first.returncode == 0, first.stderr
    expected = {"clitree.ingress", "clitree.answers", "clitree.dlq", "clitree.stream", "clitree.agent.small",
                "clitree.agent.math", "clitree.agent.code", "clitree.agent.large"}
    assert {line.split(":")[0] for line in first.stdout.splitlines()} == expected
    assert all(line.endswith("created") for line in first.stdout.splitlines())
    again = _cli("topics", "create", str(path), "--bootstrap", kafka_bootstrap)
    assert again.returncode == 0 and all(line.endswith("exists") for line in again.stdout.splitlines())

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(sorted(expected))
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == {name: 3 for name in expected}


def test_validate_names_the_field_and_agent(tmp_path):
    bad = (ROOT / "examples" / "chain.yaml").read_text().replace("next: [large]", "next: [larg]")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    result = _cli("validate", str(path))
    assert result.returncode == 1
    assert "agents[1] (medium).next: unknown agent 'larg'" in result.stderr
    assert "large" in result.stderr  # the now-unreachable terminal is named too
    ok = _cli("validate", str(ROOT / "examples" / "mesh.yaml"))
    assert ok.returncode == 0 and "valid" in ok.stdout
