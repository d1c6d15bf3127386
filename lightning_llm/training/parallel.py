"""Model parallelism from the trainer group (trainer=tp, fsdp_tp, pp): a strategy, the Trainer that takes its
settings as `trainer.` keys, and the gradient norm over every shard.

`ModelParallel` is Lightning's ModelParallelStrategy with a third mesh dimension for pipeline stages, a
(pipeline_parallel, data_parallel, tensor_parallel) DeviceMesh, and checkpoints that are always one ordinary full
file in the model's own layout: tensor-parallel shards are gathered (`torch.distributed.checkpoint.state_dict`,
their fused rows put back in order), pipeline stages' weights and optimizer states are joined on rank 0, and
the optimizer state is keyed as a one-device run keys it. So last.ckpt loads on one device (generate, export,
eval, fine-tune) and resumes on any layout. `LanguageModelModule.configure_model` applies the layout: pipeline
stages (`training.pipeline`), then tensor parallel (`models.parallel`), then FSDP2 over `data_parallel`.

Peers' names for the same settings: torchtitan `parallelism.tensor_parallel_degree`,
`enable_sequence_parallel`, `pipeline_parallel_degree`, `pipeline_parallel_schedule`,
`pipeline_parallel_microbatch_size`; Axolotl `tensor_parallel_size`, `dp_shard_size`; torchtune
`tensor_parallel_dim`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.fabric.strategies.model_parallel import _has_dtensor_modules
from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Partial
from torch.distributed.tensor.experimental import implicit_replication

from lightning_llm.models.parallel import PackedRows, canonical_rows, sharded_rows

SCHEDULES = ("1f1b", "gpipe")
MESH_DIMENSIONS = ("pipeline_parallel", "data_parallel", "tensor_parallel")


class ModelParallel(ModelParallelStrategy):
    """Tensor, sequence, pipeline and fully sharded data parallelism on one (pipeline x data x tensor) mesh.

    `data_parallel` takes the processes the other two leave: world size / (tensor x pipeline).
    """

    def __init__(
        self,
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        sequence_parallel: bool = True,
        microbatches: int = 1,
        pipeline_schedule: Literal["1f1b", "gpipe"] = "1f1b",
    ) -> None:
        super().__init__(tensor_parallel_size=tensor_parallel_size, save_distributed_checkpoint=False)
        self.pipeline_parallel_size = pipeline_parallel_size
        self.sequence_parallel, self.microbatches, self.pipeline_schedule = (
            sequence_parallel,
            microbatches,
            pipeline_schedule,
        )

    def setup_environment(self) -> None:
        self._setup_distributed()  # the process group, as ModelParallelStrategy starts it
        tensor, pipeline = self._tensor_parallel_size, self.pipeline_parallel_size
        self._data_parallel_size = self.world_size // (tensor * pipeline)
        shape = (pipeline, self._data_parallel_size, tensor)
        self._device_mesh = init_device_mesh(self.root_device.type, shape, mesh_dim_names=MESH_DIMENSIONS)
        self.lightning_module._device_mesh = self._device_mesh

    @property
    def pipelined(self) -> bool:
        """Whether each rank holds only its pipeline stage right now (until fit's end joins them)."""
        pipeline = getattr(self.lightning_module, "pipeline", None)
        return pipeline is not None and pipeline.split

    def setup(self, trainer: pl.Trainer) -> None:
        if not self.pipelined:
            return super().setup(trainer)
        # as ModelParallelStrategy.setup, without materializing the model: the other stages' weights stay on
        # the meta device (materializing would initialise them again)
        self.accelerator.setup(trainer)
        self.model = self.precision_plugin.convert_module(self.model)
        self.model._apply(lambda t: t if t.is_meta else t.to(self.root_device))
        self.barrier()
        if trainer.state.fn == TrainerFn.FITTING:
            self.setup_optimizers(trainer)
            _optimizers_to_device(self.optimizers, self.root_device)
        self.setup_precision_plugin()
        return None

    # -- checkpoints: one full file in the model's own layout ------------------------------------------------
    def _packed_rows(self) -> PackedRows:
        return getattr(self.lightning_module, "packed_rows", {})

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if self.pipelined:
            local = {k: v.detach().cpu() for k, v in self.model.state_dict().items() if not v.is_meta}
            return {k: v for part in self._on_rank_zero(local) for k, v in part.items()}
        state = super().lightning_module_state_dict()  # gathered to rank 0 (empty elsewhere)
        for name, layout in self._packed_rows().items():
            if name in state:
                state[name] = canonical_rows(state[name], *layout)
        return state

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        optimizer = getattr(optimizer, "_optimizer", optimizer)
        if self.pipelined:  # every rank lists all parameters (the others' on meta), with state for its own only
            parts = self._on_rank_zero(local_optimizer_state(optimizer))
            return {**parts[0], "state": {k: v for part in parts for k, v in part["state"].items()}} if parts else {}
        if not _has_dtensor_modules(self.model):
            return optimizer.state_dict()
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        by_name = get_optimizer_state_dict(self.model, optimizer, options=options)
        if self.global_rank != 0:
            return {}
        for name, layout in self._packed_rows().items():
            for key, value in by_name["state"].get(name, {}).items():
                if value.ndim:
                    by_name["state"][name][key] = canonical_rows(value, *layout)
        return _keyed_by_position(by_name)

    def _on_rank_zero(self, local: Any) -> list[Any]:
        """Every pipeline stage's `local` object, on rank 0 (an empty list elsewhere)."""
        group = self.device_mesh["pipeline_parallel"].get_group()
        parts = [None] * dist.get_world_size(group) if self.global_rank == 0 else None
        dist.gather_object(local, parts, dst=0, group=group)
        return parts or []

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """The model's weights from a full checkpoint of any layout (its optimizer states come later, in
        `load_optimizer_state_dict`, after the module's `on_load_checkpoint` may have rescaled them)."""
        path = Path(self.broadcast(checkpoint_path))
        checkpoint = torch.load(path, mmap=True, map_location="cpu", weights_only=weights_only)
        strict = self.lightning_module.strict_loading
        state = dict(checkpoint.pop("state_dict"))
        for name, layout in self._packed_rows().items():
            if name in state:
                state[name] = sharded_rows(state[name], *layout)
        if _has_dtensor_modules(self.model):
            set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True, strict=strict))
        else:
            self.model.load_state_dict(state, strict=strict)
        return checkpoint

    @property
    def lightning_restore_optimizer(self) -> bool:
        return True  # through `load_optimizer_state_dict`, after `on_load_checkpoint`

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        strict = self.lightning_module.strict_loading
        for optimizer, saved in zip(self.optimizers, checkpoint.get("optimizer_states") or [], strict=False):
            if not _has_dtensor_modules(self.model):  # one device's keys: pipeline ranks list every parameter
                optimizer.load_state_dict(saved)
                continue
            by_name = _keyed_by_name(saved, self.model, optimizer)
            for name, layout in self._packed_rows().items():
                for key, value in by_name["state"].get(name, {}).items():
                    if value.ndim:
                        by_name["state"][name][key] = sharded_rows(value, *layout)
            options = StateDictOptions(full_state_dict=True, strict=strict)
            set_optimizer_state_dict(self.model, optimizer, optim_state_dict=by_name, options=options)


def local_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict (keyed by position) with the states of this rank's own parameters only, on the
    CPU: under pipeline parallel the other stages' parameters sit on the meta device."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = optimizer.state_dict()
    own = {i: value for i, value in state["state"].items() if not params[i].is_meta}
    return {**state, "state": _to_cpu(own)}


def _to_cpu(state: Any) -> Any:
    """A nested state with its tensors on the CPU (to send between ranks as objects)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, Mapping):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_to_cpu(v) for v in state]
    return state


def _keyed_by_position(by_name: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name as a one-device optimizer keys it: by the parameter's position
    in its groups, in order."""
    position = {name: i for i, name in enumerate(n for group in by_name["param_groups"] for n in group["params"])}
    groups = [{**group, "params": [position[n] for n in group["params"]]} for group in by_name["param_groups"]]
    return {"state": {position[name]: value for name, value in by_name["state"].items()}, "param_groups": groups}


def _keyed_by_name(saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A one-device optimizer state (keyed by position in the groups) keyed by the names of this optimizer's
    parameters in the same positions."""
    names = {id(p): name for name, p in model.named_parameters()}
    ordered = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**group, "params": [ordered[i] for i in group["params"]]} for group in saved["param_groups"]]
    return {"state": {ordered[i]: value for i, value in saved["state"].items()}, "param_groups": groups}


def _by_mesh(parameters: Iterable[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    """Parameters with gradients, grouped by the device mesh of their DTensor gradient (plain ones together):
    foreach kernels take one mesh at a time."""
    groups: dict[int, list[torch.nn.Parameter]] = {}
    for p in parameters:
        if p.grad is not None:
            groups.setdefault(id(p.grad.device_mesh) if isinstance(p.grad, DTensor) else 0, []).append(p)
    return list(groups.values())


def gradient_norm(parameters: Iterable[torch.nn.Parameter], pipeline: DeviceMesh | None = None) -> torch.Tensor:
    """The 2-norm of all gradients, as of one unsplit model: each mesh's DTensor shards' norms gathered, plain
    (replicated) gradients counted once, and pipeline stages' norms summed over `pipeline`."""
    norms = []
    for group in _by_mesh(parameters):
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], 2.0, foreach=True)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    if len(norms) == 1 and (pipeline is None or pipeline.size() == 1):
        return norms[0]
    squares = sum(norm.float().cpu() ** 2 for norm in norms)
    if pipeline is not None and pipeline.size() > 1:
        squares = DTensor.from_local(squares.to(pipeline.device_type).reshape(1), pipeline, [Partial()])
        squares = squares.full_tensor().reshape(()).cpu()
    return squares.sqrt()


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale every gradient (DTensor shards too) by max_norm / total_norm where that is below 1."""
    with implicit_replication():
        for group in _by_mesh(parameters):
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total_norm.to(group[0].device), foreach=True)


def data_parallel_size(trainer: pl.Trainer) -> int:
    """The processes that read different batches: a model-parallel group counts once."""
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
    return int(kwargs.get("num_replicas", trainer.world_size))


def parallel_trainer(
    *,
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
    sequence_parallel: bool = True,
    microbatches: int = 1,
    pipeline_schedule: Literal["1f1b", "gpipe"] = "1f1b",
    **trainer: Any,
) -> pl.Trainer:
    """A Lightning Trainer on `ModelParallel`, its settings given as trainer keys (conf/trainer/tp.yaml etc.)."""
    strategy = ModelParallel(
        tensor_parallel_size, pipeline_parallel_size, sequence_parallel, microbatches, pipeline_schedule
    )
    return pl.Trainer(strategy=strategy, **trainer)


def _trainer_signature() -> inspect.Signature:
    """parallel_trainer's own keys and every Trainer argument but `strategy`, so that the config's keys are checked
    against both (`recipe.schema` reads a target's signature)."""
    own = [p for p in inspect.signature(parallel_trainer).parameters.values() if p.kind is p.KEYWORD_ONLY]
    lightning = inspect.signature(pl.Trainer.__init__).parameters.values()
    return inspect.Signature([*own, *(p for p in lightning if p.kind is p.KEYWORD_ONLY and p.name != "strategy")])


parallel_trainer.__signature__ = _trainer_signature()
