import msgspec
import pytest

from disrouter.actors.decision import REJECT_PHRASE
from disrouter.training.config import ConfigError, TrainConfig, load_config
from disrouter.training.rl import expected_reward, make_reward_fn, reward


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_reward_is_one_zero_or_the_reject_value(alpha):
    assert reward("7 + 5 = 12\nThe answer is: 12", alpha, "12", "numeric", 0.5) == 1.0
    assert reward("The answer is: 11", alpha, "12", "numeric", 0.5) == 0.0
    assert reward(REJECT_PHRASE, alpha, "12", "numeric", 0.5) == pytest.approx((1 - alpha) ** 0.5)


def test_reject_value_follows_gamma_and_the_policy_optimum():
    assert reward("I don't know!", 0.8, "12", "numeric", 1.0) == pytest.approx(0.2)
    assert reward("I don't know!", 0.5, "12", "numeric", 0.5) == pytest.approx(0.7071, abs=1e-4)
    # Answering beats rejecting in expectation exactly when p > (1 − α)^γ.
    p = 0.8
    assert p * 1.0 > reward(REJECT_PHRASE, 0.5, "1", "numeric", 0.5)
    assert p * 1.0 < reward(REJECT_PHRASE, 0.2, "1", "numeric", 0.5)


def test_replies_are_graded_as_serving_reads_them():
    # Serving stops at the reject phrase: whatever follows it does not turn it into an answer.
    assert reward("I don't know! But maybe 12.", 0.5, "12", "numeric", 0.5) == pytest.approx(0.5**0.5)
    # "I don't know how…" is an answer (a wrong one here), not the reject.
    assert reward("I don't know how, but 11", 0.5, "12", "numeric", 0.5) == 0.0
    # Serving keeps the reply up to the first complete answer line.
    assert reward("The answer is: 12\nThe answer is: 13", 0.5, "12", "numeric", 0.5) == 1.0
    assert reward("The answer is: 13\nThe answer is: 12", 0.5, "12", "numeric", 0.5) == 0.0
    assert reward("The answer is: B", 0.5, "B", "choice", 0.5) == 1.0


def test_trl_reward_function_reads_conversational_completions_and_dataset_columns():
    fn = make_reward_fn(0.5)
    rewards = fn(
        completions=[[{"role": "assistant", "content": "The answer is: 12"}], [{"role": "assistant", "content": REJECT_PHRASE}], "The answer is: 3"],
        alpha=[0.5, 0.8, 0.2],
        gold=["12", "12", "4"],
        kind=["numeric"] * 3,
        prompts=None,
        trainer_state=None,
    )
    assert rewards == pytest.approx([1.0, 0.2**0.5, 0.0])


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_expected_reward_grades_the_decision_only(alpha, p):
    # An answer earns the question's competence whatever its text: a wrong-looking answer, a
    # right one and an opening cut short all earn p; a reject earns (1 − α)^γ as in `reward`.
    for reply in ("The answer is: 11", "7 + 5 = 12\nThe answer is: 12", "7 +", "I don't know how"):
        assert expected_reward(reply, alpha, p, 0.5) == p
    assert expected_reward(REJECT_PHRASE, alpha, p, 0.5) == pytest.approx((1 - alpha) ** 0.5)
    assert expected_reward("I don't know! 12", alpha, p, 0.5) == reward(REJECT_PHRASE, alpha, "12", "numeric", 0.5)


def test_expected_reward_function_reads_the_competence_column():
    fn = make_reward_fn(0.5, "expected")
    rewards = fn(
        completions=[[{"role": "assistant", "content": "The answer"}], [{"role": "assistant", "content": REJECT_PHRASE}], "12"],
        alpha=[0.5, 0.8, 0.2], p=[0.75, 0.9, 0.0], gold=["12", "12", "12"], kind=["numeric"] * 3,
        prompts=None, trainer_state=None,
    )
    assert rewards == pytest.approx([0.75, 0.2**0.5, 0.0])  # the last one is right, and p says 0


def test_config_errors_name_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agent: a\nmodel: m\nout: o\nsft: {epochs: 1, lerning_rate: 0.1}\n")
    with pytest.raises(ConfigError, match="lerning_rate"):
        load_config(path)
    path.write_text("agent: a\nmodel: m\nout: o\nrl: {batch_size: 7, num_generations: 6}\n")
    with pytest.raises(ConfigError, match="multiple of rl.num_generations"):
        load_config(path)
    path.write_text("agent: a\nmodel: m\nout: o\nrl: {reward: graded}\n")
    with pytest.raises(ConfigError, match="rl.reward"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("agent: a\nmodel: m\nout: o\nsft: {alphas: [0.2, 1.5]}\n")
    with pytest.raises(ConfigError, match="α"):
        load_config(path)
    path.write_text("agent: a\nmodel: m\nout: o\nsft: {answer_tokens: 0}\n")
    with pytest.raises(ConfigError, match="sft.answer_tokens"):
        load_config(path)
    path.write_text("agent: a\nmodel: m\nout: o\ndata: {sets: [{name: arith, skip: -1}]}\n")
    with pytest.raises(ConfigError, match="skip"):
        load_config(path)


def test_an_sft_adapter_cannot_ship_where_rl_trains_a_given_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agent: a\nmodel: m\nout: o\nship: sft\nrl: {start: some/adapter, prompts: 60}\n")
    with pytest.raises(ConfigError, match="ship: sft with rl.start"):
        load_config(path)
    # Without RL prompts the start adapter is unused, SFT runs, and its adapter can ship.
    path.write_text("agent: a\nmodel: m\nout: o\nship: sft\nrl: {start: some/adapter, prompts: 0}\n")
    assert load_config(path).ship == "sft"


def test_shipped_recipes_load():
    from pathlib import Path

    from disrouter.topology.load import load_topology

    root = Path(__file__).resolve().parents[2]
    recipes = sorted((root / "training" / "recipes").glob("*.yaml"))
    assert recipes
    configs = {path.name: load_config(path) for path in recipes}
    by_out = {cfg.out: cfg for cfg in configs.values()}
    for name, cfg in configs.items():
        assert cfg.data.sets
        if name.startswith("competence-"):  # measurement only: greedy, nothing to train on
            assert cfg.data.train_questions == 0 and cfg.sample.temperature == 0.0 and cfg.sample.n == 1
        elif "-successor" in name:  # another agent's labels read this competence: measured, not trained
            assert cfg.data.train_questions > 0 and cfg.export_to is None
            # Sampled (n > 1 at T > 0), or the one greedy reply the chain gets when it hands a question on.
            assert (cfg.sample.n > 1 and cfg.sample.temperature > 0) or (cfg.sample.n == 1 and cfg.sample.temperature == 0.0)
        else:
            assert cfg.export_to
        labels = cfg.sft.labels
        if labels.rule == "successor":
            # The successor's cache comes from a shipped recipe asking the same training questions.
            successor = by_out[labels.successor]
            assert successor.agent != cfg.agent
            assert (successor.data.sets[0].name, successor.data.train_questions) == (cfg.data.sets[0].name, cfg.data.train_questions)
        if cfg.calibrate.topology:  # calibrated as a shipped topology serves the agent
            _, served = load_topology(root / cfg.calibrate.topology)
            assert cfg.agent in {agent.name for agent in served.agents}, name
    # Each shipped adapter is exported by exactly one recipe: its card's command is that recipe's.
    shipped = [cfg.export_to for cfg in configs.values() if cfg.export_to and cfg.export_to.startswith("examples/adapters/")]
    assert sorted(shipped) == sorted({str(p.relative_to(root)) for p in (root / "examples" / "adapters").iterdir() if p.is_dir()})


@pytest.mark.parametrize("ship,rl_ran,expected", [("rl", True, "rl"), ("rl", False, "sft"), ("sft", True, "sft")])
def test_ship_picks_the_stage_that_is_reported_and_exported(tmp_path, ship, rl_ran, expected):
    from disrouter.training.config import TrainConfig
    from disrouter.training.pipeline import Run

    cfg = TrainConfig(agent="a", model="m", out=str(tmp_path), ship=ship)
    for stage in ("sft", "rl") if rl_ran else ("sft",):
        (tmp_path / stage / "adapter").mkdir(parents=True)
        (tmp_path / stage / "adapter" / "adapter_config.json").write_text("{}")
    assert Run(cfg, "cfg.yaml", "disrouter train all cfg.yaml").final_adapter() == tmp_path / expected / "adapter"


@pytest.mark.parametrize("ship,says", [("sft", True), ("rl", False)])
def test_card_says_when_the_sft_weights_ship(ship, says):
    from disrouter.training.export import render_card

    stages = [{"stage": "sft", "wall_s": 10.0}, {"stage": "rl", "wall_s": 20.0, "tokens_sampled": 5}]
    card = {
        "name": "a-selfaware", "command": "disrouter train all a.yaml", "adapter": {"r": 8},
        "base_model": {"id": "m"}, "data": {}, "metrics": None, "versions": {}, "python": "3.11",
        "config": {"ship": ship} if ship == "sft" else {},
        "training_cost": {"stages": stages, "wall_s": 30.0, "tokens_sampled": 5, "tokens_trained": 0},
    }
    text = render_card(card)
    assert ("SFT stage's weights" in text) is says
    assert "| rl | 20 s |" in text and "**30 s**" in text


@pytest.mark.parametrize("answer_tokens", [8, None])
def test_card_says_a_gate_must_not_answer(answer_tokens):
    from disrouter.training.export import render_card

    card = {
        "name": "a-gate", "command": "disrouter train all a.yaml", "adapter": {"r": 8},
        "base_model": {"id": "m"}, "data": {}, "metrics": None, "versions": {}, "python": "3.11",
        "config": {"sft": {"answer_tokens": answer_tokens}} if answer_tokens else {"sft": {}},
        "training_cost": {"stages": [{"stage": "sft", "wall_s": 10.0}], "wall_s": 10.0, "tokens_sampled": 0, "tokens_trained": 0},
    }
    text = render_card(card)
    assert ("never as `lora:`" in text) is (answer_tokens is not None)
    assert ("first 8 tokens" in text) is (answer_tokens == 8)


def fake_adapter(tmp_path):
    """A trained adapter's folder as export expects it (the files export copies)."""
    from disrouter.training.export import ADAPTER_FILES

    adapter = tmp_path / "sft" / "adapter"
    adapter.mkdir(parents=True)
    for file in ADAPTER_FILES:
        (adapter / file).write_text("{}")
    return adapter


@pytest.mark.parametrize("export_to,name", [(None, "a-selfaware"), ("examples/adapters/a-answers", "a-answers"),
                                            ("examples/adapters/a-answers/", "a-answers")])
def test_card_is_named_after_the_folder_it_ships_in(tmp_path, export_to, name):
    from disrouter.training.export import export

    adapter = fake_adapter(tmp_path)
    cfg = TrainConfig(agent="a", model="m", out=str(tmp_path / "out"),
                      export_to=str(tmp_path / export_to) if export_to else None)
    dest = export(cfg, adapter, costs=[], data={}, metrics=None, command="c", config_file="a.yaml")
    card = msgspec.json.decode((dest / "card.json").read_bytes())
    assert card["name"] == name and f"# {name}" in (dest / "README.md").read_text()


def test_a_new_report_goes_into_an_exported_card_and_nothing_else_changes(tmp_path):
    from disrouter.training.export import export, update_metrics

    adapter = fake_adapter(tmp_path)
    cfg = TrainConfig(agent="a", model="m", out=str(tmp_path / "out"), export_to=str(tmp_path / "a-selfaware"))
    costs = [{"stage": "sft", "wall_s": 12.0, "tokens_trained": 7}]
    dest = export(cfg, adapter, costs=costs, data={"sets": ["arith"]}, metrics={"table": "old"}, command="c",
                  config_file="a.yaml")
    before = msgspec.json.decode((dest / "card.json").read_bytes())
    update_metrics(dest, {"table": "| 0.2 | new |"}, "disrouter train report a.yaml --adapter X --update-card")
    after = msgspec.json.decode((dest / "card.json").read_bytes())
    assert after["metrics"] == {"table": "| 0.2 | new |"}
    assert after["metrics_command"].endswith("--update-card")
    assert {k: v for k, v in after.items() if k not in ("metrics", "metrics_command")} == \
        {k: v for k, v in before.items() if k != "metrics"}  # cost, data, config, command: as exported
    text = (dest / "README.md").read_text()
    assert "| 0.2 | new |" in text and "old" not in text and "Measured by `disrouter train report" in text
    with pytest.raises(FileNotFoundError, match="card.json"):
        update_metrics(tmp_path / "sft" / "adapter", {}, "c")


def test_update_card_goes_only_with_a_report_on_an_adapter(tmp_path, capsys):
    import yaml

    from disrouter.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"agent": "a", "model": "m", "out": str(tmp_path / "out")}))
    for argv in (["train", "report", str(recipe), "--update-card"], ["train", "sft", str(recipe), "--update-card"]):
        assert main(argv) == 2
        assert "--update-card goes with `report --adapter DIR`" in capsys.readouterr().err
    # A folder without a card is refused before the report runs (the run here has no competence
    # cache, so a report that started would fail on that instead).
    (tmp_path / "bare").mkdir()
    assert main(["train", "report", str(recipe), "--adapter", str(tmp_path / "bare"), "--update-card"]) == 2
    assert "card.json is missing" in capsys.readouterr().err
