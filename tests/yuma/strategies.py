"""Hypothesis strategies for random but valid epoch inputs."""

from __future__ import annotations

from hypothesis import strategies as st

from crucible.chain.yuma import EpochInput, EpochParams


@st.composite
def epoch_inputs(draw, max_n: int = 8, variant: str | None = None) -> EpochInput:
    n = draw(st.integers(1, max_n))
    block = draw(st.integers(0, 3000))
    stake = draw(st.lists(st.integers(0, 10**12), min_size=n, max_size=n))
    last_update = draw(st.lists(st.integers(0, block), min_size=n, max_size=n))
    reg = draw(st.lists(st.integers(0, block), min_size=n, max_size=n))
    permit = draw(st.lists(st.booleans(), min_size=0, max_size=n))
    u16 = st.integers(0, 65535)

    def rows():
        return [
            sorted(draw(st.dictionaries(st.integers(0, n), u16, max_size=n + 1)).items())
            for _ in range(n)
        ]

    params = EpochParams(
        kappa=draw(st.sampled_from([32767, 0, 65535, draw(u16)])),
        bonds_penalty=draw(st.sampled_from([65535, 0, draw(u16)])),
        bonds_moving_average=draw(st.sampled_from([900_000, 975_000, draw(st.integers(0, 10**6))])),
        liquid_alpha=draw(st.booleans()),
        alpha_low=draw(st.integers(1638, 45875)),
        alpha_high=draw(st.integers(45875, 65535)),
        alpha_sigmoid_steepness=draw(st.sampled_from([1000, 100, draw(st.integers(-2000, 2000))])),
        activity_cutoff_blocks=draw(st.integers(1, 5000)),
        max_allowed_validators=draw(st.integers(1, n + 1)),
        stake_threshold=draw(st.sampled_from([0, 10**9])),
        owner_uid=draw(st.one_of(st.none(), st.integers(0, n - 1))),
        tempo=draw(st.sampled_from([10, 100, 360])),
        last_mechanism_step_block=draw(st.sampled_from([0, max(0, block - 10)])),
        rao_emission=draw(st.sampled_from([0, 10**9, draw(st.integers(0, 10**12))])),
    )
    return EpochInput(
        variant=variant or draw(st.sampled_from(["yuma3", "classic"])),
        block=block,
        params=params,
        stake=stake,
        last_update=last_update,
        block_at_registration=reg,
        validator_permit=permit,
        weights=rows(),
        bonds=rows(),
        # commit-reveal mask (§4.5 step 5): each uid's earliest pending commit block, if any
        commit_block=draw(
            st.one_of(
                st.none(),
                st.lists(st.one_of(st.none(), st.integers(0, block)), min_size=n, max_size=n),
            )
        ),
    )
