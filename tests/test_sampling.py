"""The warm-up's planned data order against the samplers that really deal the batches."""

from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from coldstart.sampling import EpochOrder, VisitPlan


def dealt(size: int, seed: int, batch_size: int, processes: int, epoch: int) -> list[list[int]]:
    """The micro-batches of one epoch as accelerate deals them, round by round over the processes (one process
    gets the batch sampler as it is)."""
    order = EpochOrder(size, seed)
    order.set_epoch(epoch)
    if processes == 1:
        return list(BatchSampler(order, batch_size, drop_last=False))
    shards = [list(BatchSamplerShard(BatchSampler(order, batch_size, drop_last=False), processes, rank))
              for rank in range(processes)]
    return [sum((shard[r] for shard in shards), []) for r in range(len(shards[0]))]


def test_plan_matches_accelerates_sharded_batches():
    # 10 samples, 2 processes x 4: the second round is topped up from the epoch's start (even batches)
    plan = VisitPlan(10, seed=3, batch_size=4, processes=2, accumulation=1)
    assert plan.steps_per_epoch == 2
    for epoch in range(2):
        rounds = dealt(10, 3, 4, 2, epoch)
        assert [plan.rows(epoch * 2 + j + 1) for j in range(2)] == rounds
    assert len(plan.rows(2)) == 8 and set(plan.rows(1)) | set(plan.rows(2)) == set(range(10))


def test_plan_groups_micro_batches_into_steps_and_counts_later_visits():
    # one process, micro-batches of 3, 2 per step: 7 samples make 3 micro-batches, so 2 steps (6 + 1 samples)
    plan = VisitPlan(7, seed=0, batch_size=3, processes=1, accumulation=2)
    first = dealt(7, 0, 3, 1, 0)
    assert plan.steps_per_epoch == 2
    assert plan.rows(1) == first[0] + first[1] and plan.rows(2) == first[2]
    visits = plan.visits_after(1, 4)  # step 2 (1 sample), then the whole second epoch
    assert sum(visits.values()) == 1 + 7 and visits[first[2][0]] == 2
