"""Test harness: run one pipeline stage over a list of inputs and collect its outputs.

Modeled on pipecat's ``run_test``: a stage is anything with
``async run(inbox: Channel, outbox: Channel)`` that closes ``outbox`` when ``inbox`` ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from ostinato.stream.channel import Channel
from ostinato.stream.frames import StreamEnd

__all__ = ["Stage", "run_stage"]


class Stage(Protocol):
    async def run(self, inbox: Channel[Any], outbox: Channel[Any]) -> None: ...


async def run_stage(
    stage: Stage, inputs: Sequence[Any], *, inbox_capacity: int = 8, outbox_capacity: int = 8, timeout_s: float = 60.0
) -> list[Any]:
    """Feed ``inputs`` (end markers as control items), close the inbox, return all outputs.

    Small channel capacities on purpose: the stage runs under real backpressure.
    """
    inbox: Channel[Any] = Channel(inbox_capacity, name="harness_in")
    outbox: Channel[Any] = Channel(outbox_capacity, name="harness_out")
    outputs: list[Any] = []

    async def feed() -> None:
        for item in inputs:
            if isinstance(item, StreamEnd):
                inbox.put_control(item)
            else:
                await inbox.put(item)
        inbox.close()

    async def collect() -> None:
        async for item in outbox:
            outputs.append(item)

    async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
        tg.create_task(feed())
        tg.create_task(stage.run(inbox, outbox))
        tg.create_task(collect())
    return outputs
