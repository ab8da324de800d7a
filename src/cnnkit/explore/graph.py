"""Which units feed which: the edges the overview draws, from the units' order, blocks and branches."""

from __future__ import annotations

from cnnkit.analysis.trace import Unit


def unit_inputs(units: list[Unit]) -> dict[str, list[str]]:
    """Unit id -> ids of the units whose output it reads (empty: the input image).

    A branch's first unit reads the block's input, later ones the unit before them on the branch; a block's fusion
    reads the last unit of every branch; anything else reads the unit before it (a whole block: its last unit).
    """
    inputs: dict[str, list[str]] = {}
    previous: list[str] = []  # what the next unit outside a branch reads
    block: str | None = None
    block_input: list[str] = []
    branch_last: dict[str, str] = {}
    for unit in units:
        if unit.block != block:  # entering a new block (or leaving one)
            block, block_input, branch_last = unit.block, previous, {}
        if unit.block is not None and unit.branch is not None:
            inputs[unit.id] = [branch_last[unit.branch]] if unit.branch in branch_last else list(block_input)
            branch_last[unit.branch] = unit.id
            continue
        if unit.block is not None and branch_last:  # the fusion: every branch's last unit
            inputs[unit.id] = list(branch_last.values())
            branch_last = {}
        else:
            inputs[unit.id] = list(previous)
        previous = [unit.id]
    return inputs
