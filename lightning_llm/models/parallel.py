"""Tensor parallelism for the shared blocks, on `torch.distributed.tensor.parallel`: what a family's
`tensor_parallel_plan` is made of, and `apply_tensor_parallel`, which applies one to a model.

- Attention: q, k, v split by columns (output features), so each rank holds whole heads, grouped-query heads
  with their key/value head; the output projection split by rows (input features), its partial sums reduced.
  A rank's attention reads its head count off its tensors (`blocks.Attention`), never the config's.
- MLP: up (and gate) by columns, down by rows.
- Fused projections ([q | k | v], [gate | up], [k | v]) are split part by part: rank r holds the r-th slice of
  every part side by side (the rows reordered rank by rank, `rank_major_rows`), so its output is its own q, k
  and v. `canonical_rows` puts a gathered tensor's rows back in the model's order, for full checkpoints.
- Sequence parallel: between the sharded projections the residual stream is split along the sequence (a DTensor
  sharded on dim 1), so norms, dropout and residual adds each handle 1/N of it; a stack's first block splits its
  input, its last gathers its output (any length: DTensor shards unevenly, so generation works too).
- Embeddings split by vocabulary rows (partial lookups summed), the LM head by vocabulary columns (logits
  gathered): a tied pair keeps one parameter with one layout.
- A wrapped projection (LoRA's low-rank factors beside a frozen linear) is split with its linear: a factor on
  the output side like the weight's rows, one on the input side like its columns. Other weights inside the
  blocks (adapters) are replicated; under sequence parallel they take sequence shards, as norms do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from lightning_llm.errors import ConfigError
from lightning_llm.models.blocks import ModelConfig, mlp_width

#: module path -> how that module is split (the dict `parallelize_module` takes, paths relative to the model)
TensorParallelPlan = dict[str, ParallelStyle]
#: parameter path -> (row counts of the parts fused in it, ranks): the parameters stored rank by rank
PackedRows = dict[str, tuple[tuple[int, ...], int]]


def rank_major_rows(parts: Sequence[int], size: int) -> torch.Tensor:
    """The row order of a projection fusing `parts` (their row counts), each split over `size` ranks: rank 0's
    slice of every part, then rank 1's, and so on."""
    starts = [sum(parts[:i]) for i in range(len(parts))]
    return torch.cat(
        [
            torch.arange(start + rank * (part // size), start + (rank + 1) * (part // size))
            for rank in range(size)
            for start, part in zip(starts, parts, strict=True)
        ]
    )


def canonical_rows(tensor: torch.Tensor, parts: Sequence[int], size: int) -> torch.Tensor:
    """A gathered rank-by-rank tensor (`rank_major_rows`) with its rows back in the model's order."""
    return tensor[torch.argsort(rank_major_rows(parts, size))]


def sharded_rows(tensor: torch.Tensor, parts: Sequence[int], size: int) -> torch.Tensor:
    """A tensor in the model's row order, reordered rank by rank (what a sharded parameter gathers to)."""
    return tensor[rank_major_rows(parts, size)]


def _linear_of(module: nn.Module) -> nn.Linear:
    """The one nn.Linear of a projection: the module itself, or the frozen base of a wrapper (LoRA)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ConfigError(f"{type(module).__name__} holds {len(linears)} linear layers: tensor parallel splits one")
    return linears[0]


class ShardedLinear(ParallelStyle):
    """A projection split over the tensor-parallel ranks by `columns` (output features: each rank computes its
    own heads or hidden units from the whole input) or by `rows` (input features: each rank adds its share).

    `parts`: the row counts of the projections fused in its weight (split part by part). `output`: the layout of
    the result (columns: Shard(-1), this rank's features, or Replicate, all of them; rows: Replicate, or Shard(1)
    along the sequence); `local_output`: hand on a plain tensor (else a DTensor, the sequence-parallel stream).
    """

    def __init__(
        self,
        by: Literal["columns", "rows"],
        parts: Sequence[int] | None = None,
        output: Placement | None = None,
        local_output: bool = True,
    ) -> None:
        super().__init__()
        self.by, self.parts = by, tuple(parts) if parts else None
        self.output = output or (Shard(-1) if by == "columns" else Replicate())
        self.local_output = local_output
        self.input = Replicate() if by == "columns" else Shard(-1)

    @staticmethod
    def _side(param: nn.Parameter, name: str, owner: nn.Module, linear: nn.Linear) -> str:
        """What a parameter of the projection is: the linear's "weight", or a tensor on its "output" side (the
        bias, LoRA's B: one row per output feature) or its "input" side (LoRA's A: one column per input)."""
        out_features, in_features = linear.out_features, linear.in_features
        if owner is linear:
            return "weight" if name == "weight" else "output"
        if param.ndim == 2 and param.shape[0] == out_features and param.shape[1] != in_features:
            return "output"
        if param.ndim == 2 and param.shape[1] == in_features and param.shape[0] != out_features:
            return "input"
        raise ConfigError(
            f"a weight of shape {tuple(param.shape)} beside a {in_features}->{out_features} projection is neither "
            "on its input nor its output side: tensor parallel cannot split it"
        )

    def _placement(self, side: str) -> tuple[Placement, bool]:
        """Where a parameter on that side goes, and whether its rows are reordered rank by rank (fused parts)."""
        if self.by == "columns":  # output features split: the weight's and the output side's rows
            return (Replicate(), False) if side == "input" else (Shard(0), True)
        return (Replicate(), False) if side == "output" else (Shard(1), False)  # by rows: input features split

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        linear, size = _linear_of(module), device_mesh.size()
        packed: PackedRows = {}
        for owner_name, owner in module.named_modules():
            for name, param in list(owner.named_parameters(recurse=False)):
                placement, reorder = self._placement(self._side(param, name, owner, linear))
                data = param.detach()
                if reorder and self.parts:
                    data = sharded_rows(data, self.parts, size)
                    packed[f"{owner_name}.{name}" if owner_name else name] = (self.parts, size)
                sharded = distribute_tensor(data, device_mesh, [placement])
                owner.register_parameter(name, nn.Parameter(sharded, requires_grad=param.requires_grad))
        module.tensor_parallel_rows = packed
        return distribute_module(module, device_mesh, _keep, self._prepare_input, self._prepare_output)

    def _prepare_input(self, module: nn.Module, inputs: tuple[Any, ...], mesh: DeviceMesh) -> tuple[Any, ...]:
        x = inputs[0]
        x = x.redistribute(mesh, [self.input]) if isinstance(x, DTensor) else DTensor.from_local(x, mesh, [self.input])
        return (x, *inputs[1:])

    def _prepare_output(self, module: nn.Module, output: DTensor, mesh: DeviceMesh) -> torch.Tensor:
        if output.placements != (self.output,):
            output = output.redistribute(mesh, [self.output])
        return output.to_local() if self.local_output else output


def _keep(name: str, module: nn.Module, mesh: DeviceMesh) -> None:
    """A partition function that leaves the parameters as they are (already distributed)."""


class StackBoundary(ParallelStyle):
    """Sequence parallel at the ends of a block stack: the first block splits its input (the residual stream)
    along the sequence, the last gathers its output into one plain tensor on every rank."""

    def __init__(self, split_input: bool, gather_output: bool) -> None:
        super().__init__()
        self.split_input, self.gather_output = split_input, gather_output

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def split(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict]:
            x = args[0]
            if not isinstance(x, DTensor):
                x = DTensor.from_local(x, device_mesh, [Replicate()]).redistribute(device_mesh, [Shard(1)])
            return (x, *args[1:]), kwargs

        def gather(_: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            return output.redistribute(device_mesh, [Replicate()]).to_local() if isinstance(output, DTensor) else output

        if self.split_input:
            module.register_forward_pre_hook(split, with_kwargs=True)
        if self.gather_output:
            module.register_forward_hook(gather)
        return module


def vocabulary_rows() -> ParallelStyle:
    """A token embedding split by vocabulary rows: each rank looks up its own tokens, the lookups are summed."""
    return RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())


def vocabulary_columns() -> ParallelStyle:
    """An LM head split by vocabulary (its weight's rows, as `vocabulary_rows`, so a tied pair agrees); the
    logits are gathered whole."""
    return ShardedLinear("columns", output=Replicate())


def head_columns() -> ParallelStyle:
    """A table with one column per attention head (T5's relative position bias): each rank keeps its heads'."""
    return ColwiseParallel(input_layouts=Replicate(), output_layouts=Shard(-1))


def _row_split(sequence_parallel: bool) -> ShardedLinear:
    """An output projection split by rows: its sums reduced whole, or scattered along the sequence (a DTensor
    stream) under sequence parallel."""
    return ShardedLinear("rows", output=Shard(1), local_output=False) if sequence_parallel else ShardedLinear("rows")


def attention_plan(path: str, config: ModelConfig, sequence_parallel: bool, cross: bool = False) -> TensorParallelPlan:
    """A shared `blocks.Attention` at `path`: heads split by columns (self-attention's fused [q | k | v] part by
    part, cross-attention's q and fused [k | v]), the output projection by rows."""
    q_dim, kv_dim = config.n_head * config.head_dim, config.n_kv_head * config.head_dim
    columns = (
        {f"{path}.q": ShardedLinear("columns"), f"{path}.kv": ShardedLinear("columns", parts=(kv_dim, kv_dim))}
        if cross
        else {f"{path}.qkv": ShardedLinear("columns", parts=(q_dim, kv_dim, kv_dim))}
    )
    return {**columns, f"{path}.proj": _row_split(sequence_parallel)}


def mlp_plan(path: str, config: ModelConfig, sequence_parallel: bool) -> TensorParallelPlan:
    """A shared `blocks.MLP` at `path`: hidden units split (up, and gate part by part), down by rows."""
    parts = (mlp_width(config),) * 2 if config.gated else None
    return {f"{path}.fc": ShardedLinear("columns", parts=parts), f"{path}.proj": _row_split(sequence_parallel)}


def block_plan(path: str, block: nn.Module, config: ModelConfig, sequence_parallel: bool) -> TensorParallelPlan:
    """A shared `blocks.Block` at `path`: its attention (and cross-attention) and MLP split; under sequence
    parallel its norms on sequence shards."""
    plan = {
        **attention_plan(f"{path}.attn", config, sequence_parallel),
        **mlp_plan(f"{path}.mlp", config, sequence_parallel),
    }
    norms = ["norm_attn", "norm_mlp"]
    if getattr(block, "cross_attn", None) is not None:
        plan.update(attention_plan(f"{path}.cross_attn", config, sequence_parallel, cross=True))
        norms.append("norm_cross")
    if sequence_parallel:
        plan.update({f"{path}.{norm}": SequenceParallel() for norm in norms})
    return plan


def stack_boundaries(path: str, n_blocks: int) -> TensorParallelPlan:
    """Sequence parallel at a stack of `n_blocks` blocks at `path`: its first block splits the stream entering it
    along the sequence, its last gathers it whole again."""
    last = n_blocks - 1
    plan: TensorParallelPlan = {f"{path}.0": StackBoundary(split_input=True, gather_output=last == 0)}
    if last:
        plan[f"{path}.{last}"] = StackBoundary(split_input=False, gather_output=True)
    return plan


def stack_plan(path: str, stack: nn.ModuleList, config: ModelConfig, sequence_parallel: bool) -> TensorParallelPlan:
    """A stack of shared blocks at `path` (e.g. "blocks"): each block's plan, and under sequence parallel its
    boundaries."""
    plan: TensorParallelPlan = {}
    for i, block in enumerate(stack):
        plan.update(block_plan(f"{path}.{i}", block, config, sequence_parallel))
    return {**plan, **(stack_boundaries(path, len(stack)) if sequence_parallel else {})}


def tensor_parallel_problem(config: ModelConfig, size: int) -> str | None:
    """Why a model of `config` cannot be split over `size` tensor-parallel ranks (None when it can)."""
    counts = {
        "model.n_head": config.n_head,
        "model.n_kv_head (grouped-query heads stay with their key/value head)": config.n_kv_head,
        "the MLP width (model.mlp_hidden)": mlp_width(config),
    }
    for what, count in counts.items():
        if count % size:
            return f"{what}={count} is not divisible by the tensor-parallel size {size}"
    return None


def find_module(root: nn.Module, path: str) -> nn.Module:
    """The module at `path`, looking through modules a fine-tuning method wrapped (an adapter holds the attention
    it follows as `inner`): where a name is not a child, the one child that has it is followed."""
    module = root
    for name in path.split("."):
        while name not in module._modules:
            holders = [child for child in module.children() if name in child._modules]
            if len(holders) != 1:
                raise KeyError(f"{path}: no module {name!r} under {type(module).__name__}")
            module = holders[0]
        module = module._modules[name]
    return module


def _tied_groups(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """The (module, parameter name) places that share one parameter (a tied embedding and LM head)."""
    places: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            places.setdefault(id(param), []).append((module, name))
    return [group for group in places.values() if len(group) > 1]


def apply_tensor_parallel(model: nn.Module, mesh: DeviceMesh, sequence_parallel: bool) -> PackedRows:
    """Split `model` over the ranks of `mesh` by its family's `tensor_parallel_plan`; tied parameters stay tied.
    Returns the parameters stored rank by rank (for `canonical_rows`)."""
    plan = model.tensor_parallel_plan(sequence_parallel)
    if plan is None:
        raise ConfigError(f"model family '{model.family}' has no tensor-parallel plan: use trainer=fsdp or ddp")
    problem = tensor_parallel_problem(model.config, mesh.size())
    if problem:
        raise ConfigError(problem)
    tied = _tied_groups(model)
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    for path, style in plan.items():
        parallelize_module(find_module(model, path), mesh, style)
    if sequence_parallel:  # weights the plan does not split, inside the blocks (adapters), see sequence shards
        for stack in model.layer_stacks():
            for module in stack.modules():
                if any(not isinstance(p, DTensor) for p in module.parameters(recurse=False)):
                    parallelize_module(module, mesh, SequenceParallel())
    for (first, first_name), *others in tied:
        for module, name in others:
            setattr(module, name, getattr(first, first_name))
    for name, param in model.named_parameters():  # SequenceParallel's replicas train unless told otherwise
        param.requires_grad_(name not in frozen)
    return {
        f"{name}.{param}": layout
        for name, module in model.named_modules()
        for param, layout in getattr(module, "tensor_parallel_rows", {}).items()
    }
