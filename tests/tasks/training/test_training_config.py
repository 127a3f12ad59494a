"""Bad settings are refused before any training, each naming the Param and the rule; the schedule is a function
of the step alone (what makes a resumed run continue the same learning-rate curve)."""

from __future__ import annotations

import pytest

from tasks.training.config import (
    BatchConfig,
    CheckpointConfig,
    ConfigError,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
    model_preset,
)
from tasks.training.data import DatasetInfo
from tasks.training.trainer import learning_rate


def config(**overrides) -> TrainConfig:
    parts = dict(model=model_preset("tiny"), parallel=ParallelConfig(), optim=OptimConfig(),
                 batch=BatchConfig(steps=10, micro_batch_size=2, global_batch_size=4),
                 checkpoint=CheckpointConfig("/tmp/ck"))
    return TrainConfig(**{**parts, **overrides})


def test_the_1b_preset_is_the_issue_s_shape():
    m = model_preset("1b")
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.ffn_hidden_size, m.vocab_size, m.seq_length) == (
        24, 2048, 16, 5632, 32000, 2048)
    assert 1.2e9 < m.matmul_params() < 1.4e9


@pytest.mark.parametrize(("build", "param", "rule"), [
    (lambda: config(parallel=ParallelConfig(tensor_parallel=3)), "tensor_parallel", "not divisible by 3"),
    (lambda: config(model=model_preset("125m"), parallel=ParallelConfig(pipeline_parallel=5)), "pipeline_parallel",
     "12 layers"),
    (lambda: config(parallel=ParallelConfig(data_parallel=3)), "global_batch_size", "not divisible"),
    (lambda: config(batch=BatchConfig(steps=0, micro_batch_size=1, global_batch_size=1)), "steps", ">= 1"),
    (lambda: model_preset("7b"), "preset", "not one of"),
    (lambda: OptimConfig(lr=1e-3, min_lr=1e-2), "min_lr", "[0, lr="),
    (lambda: CheckpointConfig("/tmp/ck", resume_policy="maybe"), "resume_policy", "not one of auto, restart"),
])
def test_bad_settings_name_the_param_and_the_rule(build, param, rule):
    with pytest.raises(ConfigError) as refused:
        build()
    assert str(refused.value).startswith(f"{param}: ") and rule in str(refused.value)


def test_world_size_must_be_the_product_of_the_parallel_sizes():
    ParallelConfig(tensor_parallel=2, data_parallel=2).check_world(4)
    with pytest.raises(ConfigError, match="^data_parallel: world size 2 != tensor_parallel 2 x pipeline_parallel 1"):
        ParallelConfig(tensor_parallel=2, data_parallel=2).check_world(2)


def test_a_tokenizer_larger_than_the_preset_vocabulary_is_refused_before_training():
    info = DatasetInfo(None, "c0ffee" * 10, vocab_size=9000, eod_token_id=0, pad_token_id=1, train_tokens=10**6,
                       valid_tokens=10**4)
    with pytest.raises(ConfigError, match="^preset: the tokenizer .* has 9000 tokens, more than preset tiny's"):
        info.check_model(model_preset("tiny"))
    smaller = DatasetInfo(None, "c0ffee" * 10, 2000, 0, 1, 10**6, 10**4)
    smaller.check_model(model_preset("tiny"))  # unused embedding rows are fine
    too_short = DatasetInfo(None, "c0ffee" * 10, 2000, 0, 1, 100, 0)
    with pytest.raises(ConfigError, match="^data_commit: the train split"):
        too_short.check_model(model_preset("tiny"))


def test_the_compatibility_hash_follows_what_a_resume_must_share_and_ignores_the_rest():
    base = config()
    assert config(optim=OptimConfig(lr=1e-3)).compatibility_hash() == base.compatibility_hash()
    assert config(batch=BatchConfig(steps=99, micro_batch_size=2, global_batch_size=4)).compatibility_hash() == \
        base.compatibility_hash()
    assert config(batch=BatchConfig(steps=10, micro_batch_size=2, global_batch_size=8)).compatibility_hash() != \
        base.compatibility_hash()
    assert config(parallel=ParallelConfig(tensor_parallel=2)).compatibility_hash() != base.compatibility_hash()


def test_learning_rate_warms_up_linearly_then_decays_to_the_floor():
    optim = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=4)
    assert [learning_rate(s, optim, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    decay = [learning_rate(s, optim, 20) for s in range(4, 21)]
    assert decay == sorted(decay, reverse=True) and decay[-1] == pytest.approx(0.1)


def test_ranks_that_do_not_split_over_the_nodes_are_refused_before_lakefs_is_asked():
    from tasks.training.pretrain import launch_plan
    from tasks.training.session import PASSED_SETTINGS

    settings = {name: 1 for name in PASSED_SETTINGS} | {"data_parallel": 2, "nodes": 3, "gpus_per_node": 1}
    with pytest.raises(ConfigError, match=r"^nodes: world size 2 .* not divisible by nodes=3"):
        launch_plan(settings, repo="corpus", data_commit="main", artifact_root="/data", run_key="r", endpoint=None)
