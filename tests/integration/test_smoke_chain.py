import pytest

from disrouter.actors.contracts import Query
from tests.integration.conftest import TRACE, topology_args


async def test_chain_smoke(deploy_topology, client_factory, kafka_bootstrap, namespace):
    agents = [
        {"name": "small", "cost": 0.1, "engine": {"type": "replay", "trace": str(TRACE)}, "next": ["medium"]},
        {"name": "medium", "cost": 0.4, "engine": {"type": "replay", "trace": str(TRACE)}, "next": ["large"]},
        {"name": "large", "cost": 0.9, "engine": {"type": "replay", "trace": str(TRACE)}},
    ]
    deploy_topology(topology_args(namespace, kafka_bootstrap, agents))
    async with client_factory(namespace) as client:
        for i in range(1, 31):
            await client.send(Query(id=f"demo-{i}", prompt="ignored"))
        answers = await client.collect(f"{namespace}.answers", 30)
    assert len(answers) == 30
    print({a.id: a.agent for a in answers})
