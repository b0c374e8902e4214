"""How a run is put together before it trains: the configuration and the checkpoint it resumes
(:func:`prepare_run`), the process-wide set-up (:func:`run_context`: the process group, the :class:`Runtime`,
torch's global switches), the data, model, optimiser and schedule (:func:`build_run`, which writes nothing) and
the run folder with its tracking (:func:`run_folder`).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from helpers.core.config import Config, changed, dump_config, load_config
from helpers.core.errors import UserError
from helpers.core.course import PARAMETER_BUDGET
from helpers.core.io import atomic_write_text, remove_stale_temporaries, size_words
from helpers.core.signals import ignore_stop_signals
from helpers.core.terms import Leaderboard, get_term
from helpers.data.datasets import FaceImages, TrainingSet, collate, training_set
from helpers.data.layout import FaceData, open_data
from helpers.data.stage import training_root
from helpers.eval.evaluation import known_dev_images
from helpers.model.checkpoint import Checkpoint, weights_misfit
from helpers.model.resnet import FaceModel, build_face_model
from helpers.runtime.device import init_distributed
from helpers.runtime.resolve import Runtime, resolve_runtime
from helpers.training.averaging import WeightAverage
from helpers.training.budget import STARTER_EPOCHS
from helpers.training.guard import run_lock
from helpers.training.resume import adopt_paths, folder_note, refuse_other_run, refuse_unresumable, run_directory
from helpers.training.schedule import LRSchedule
from helpers.training.selection import BY_EER, Selection, resolve_select
from helpers.training.step import EpochSampler, TrainStep, training_step
from helpers.training.tracking import Tracker


def prepare_run(config_path: str | Path | None = None, overrides: list[str] = (), resume: str | None = None,
                default_name: str | None = None, take_over: bool = False) -> tuple[Config, Checkpoint | None]:
    """The configuration to run and the checkpoint to resume from (None for a fresh run). Writes nothing.

    ``resume="auto"`` continues the run folder's ``last.pt`` when there is one
    and starts fresh otherwise (what a notebook rerun after a disconnect wants);
    a path resumes that checkpoint. A resumed run keeps the checkpoint's
    configuration; ``overrides`` still apply (to extend ``train.epochs``, say),
    and where it writes (``run.*`` folders, ``data.stage_to``) is this command's
    choice, as for a new run (resume.py). A run folder holding another run's
    records is refused unless ``take_over``.
    ``default_name`` names the run folder when the configuration does not.
    """
    cfg = load_config(config_path, overrides)
    if cfg.run.name is None and default_name:
        cfg = changed(cfg, {"run.name": default_name})
    path = None
    if resume == "auto":
        candidate = run_directory(cfg) / "last.pt"
        path = candidate if candidate.is_file() else None
    elif resume:
        path = Path(resume)
    if path is None:
        last = run_directory(cfg) / "last.pt"
        if last.exists() and not resume:
            raise UserError(f"{run_directory(cfg)} already holds a run (last.pt); pass --resume auto to continue "
                            "it, or set run.name to start another")
        refuse_oversized(cfg, None)  # before the speed probe trains a stand-in of its shape
        return cfg, None
    checkpoint = Checkpoint.load(path)
    refuse_unresumable(checkpoint, path)
    cfg = adopt_paths(load_config(None, overrides, base=checkpoint.config_values), cfg)
    if not take_over:
        refuse_other_run(run_directory(cfg), checkpoint, path)
    _refuse_another_model(cfg, checkpoint, path)
    return cfg, checkpoint


def _refuse_another_model(cfg: Config, checkpoint: Checkpoint, path: Path) -> None:
    """A resume continues the model it saved: a ``--set`` that reshapes it (``model.depth=34`` on a depth-18
    run) is refused in one sentence saying what does start a new model from those weights."""
    refuse_oversized(cfg, len(checkpoint.classes))
    with torch.device("meta"):  # shapes only
        misfit = weights_misfit(build_face_model(cfg, len(checkpoint.classes)), checkpoint.model_weights("raw"))
    if misfit is None:
        return
    saved = checkpoint.config
    changes = [f"{section}.{key} {getattr(getattr(saved, section), key)} -> {getattr(getattr(cfg, section), key)}"
               for section in ("model", "loss") for key in type(getattr(cfg, section)).model_fields
               if getattr(getattr(saved, section), key) != getattr(getattr(cfg, section), key)]
    raise UserError(f"--resume continues the model in {path}, but {', '.join(changes) or 'this configuration'} "
                    f"changes its shape ({misfit}); {path} is untouched. To train a new model starting from its "
                    "weights, use --init-from with another run.name")


def refuse_oversized(cfg: Config, classes: int | None, device: torch.device | None = None) -> None:
    """A model over the assignment's parameter budget (heads included; ``classes`` None: before its margin head,
    whose size the data decides), or whose weights, gradients and optimiser state alone would not fit
    ``device``'s memory, is refused in one sentence before anything is allocated: it is counted on the meta
    device."""
    with torch.device("meta"):
        model = build_face_model(cfg, classes or 1)
    params = sum(p.numel() for p in (model.parameters() if classes else [*model.backbone.parameters(),
                                                                          *model.embedding.parameters()]))
    m = cfg.model
    if params > PARAMETER_BUDGET:
        head = f"with its margin head over {classes} classes" if classes else "before its margin head"
        raise UserError(f"the model of this configuration (ResNet-{m.depth}, model.width {m.width:g}, "
                        f"model.embedding_dim {m.embedding_dim}) has {params:,} parameters {head}, over the "
                        f"assignment's {PARAMETER_BUDGET:,}; lower model.width or model.depth")
    # fp32 weights and gradients, the optimiser's moments, the moving average: a floor, before any activation
    moments = {"sgd": 1 if cfg.optim.momentum else 0}.get(cfg.optim.name, 2)
    needed = params * 4 * (2 + moments + (1 if cfg.train.ema else 0))
    available = memory_of(device) if device is not None else None
    if available is not None and needed > available:
        raise UserError(f"the model of this configuration needs at least {size_words(needed)} for its weights, "
                        f"gradients and optimiser state, more than the {size_words(available)} of {device}; lower "
                        "model.width or model.depth")


def memory_of(device: torch.device) -> int | None:
    """The memory of ``device`` in bytes (the machine's for the CPU), or None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None


@contextmanager
def run_context(cfg: Config, previous: dict | None = None):
    """The process-wide set-up of a run, undone on exit; yields its :class:`Runtime`. Joins the torchrun process
    group (left again when this joined it), resolves the device and its fast path (``previous``: the
    ``fast_path`` record of the checkpoint a resume continues), and sets torch's global switches (deterministic
    kernels, cuDNN autotuning), which are restored, so that a notebook's next cell starts as it was."""
    joined = not dist.is_initialized()
    place = init_distributed()
    joined = joined and dist.is_initialized()
    runtime = resolve_runtime(cfg, training=True, previous=previous, announce=place.main, dist=place)
    if place.world > 1:  # each process timed its own probe: every rank takes rank 0's choice
        shared = [runtime.fast_path]
        dist.broadcast_object_list(shared, src=0, device=runtime.device)
        runtime = replace(runtime, fast_path=shared[0])
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        if cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif runtime.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield runtime
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        if joined:
            dist.destroy_process_group()


@dataclass
class RunParts:
    """What a run trains with, as :func:`build_run` makes it: the data, the training set, the model (the plain
    module, which checkpoints and evaluation use) and its moving average, the selection of best.pt, the step
    (which holds the optimiser), the epoch order and its loader, and the lr schedule."""

    data: FaceData
    train_set: TrainingSet
    model: FaceModel
    average: WeightAverage | None
    selection: Selection
    stepper: TrainStep
    sampler: EpochSampler
    loader: torch.utils.data.DataLoader
    schedule: LRSchedule


def build_run(cfg: Config, runtime: Runtime, checkpoint: Checkpoint | None = None,
              init_from: str | Path | None = None) -> RunParts:
    """The data, model, optimiser, step and schedule of a run; the model holds ``checkpoint``'s trained weights
    (a resume) or ``init_from``'s. Writes nothing."""
    main = runtime.dist.main
    data = _open_training_data(cfg, main)
    train_set = training_set(data, cfg.data.singletons, cfg.data.max_train_images, cfg.train.seed,
                             classes=checkpoint.classes if checkpoint else None)
    refuse_oversized(cfg, len(train_set.classes), runtime.device)
    model = build_face_model(cfg, len(train_set.classes))
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model_weights("raw"))  # the trained weights; the average resumes later
    elif init_from or cfg.run.init_from:
        load_weights(model, init_from or cfg.run.init_from, train_set.classes, announce=main)
    runtime.place(model)
    # The moving average lives on rank 0 only: under torchrun the ranks hold the same weights, and rank 0
    # alone evaluates and saves.
    average = WeightAverage(model, cfg.train.ema) if cfg.train.ema and main else None
    selection = _selection(cfg, data, train_set, main)
    sampler = EpochSampler(len(train_set.paths), cfg.train.batch_size, cfg.train.seed, runtime.dist.rank,
                           runtime.dist.world)
    if sampler.batches < cfg.train.accumulate:
        raise UserError(f"{len(train_set.paths)} training images make fewer than {cfg.train.accumulate} batch(es) "
                        f"of {cfg.train.batch_size} per process; lower train.batch_size")
    # step and multistep count epochs of a train.epochs-long run (the starter's when unset), scaled to a budget
    schedule = LRSchedule(cfg.sched, cfg.optim.lr, cfg.train.epochs or STARTER_EPOCHS)
    return RunParts(data, train_set, model, average, selection, training_step(cfg, runtime, model, cfg.train.accumulate), sampler,
                    _loader(cfg, runtime, data, train_set, sampler), schedule)


def _open_training_data(cfg: Config, main: bool) -> FaceData:
    """The data root a run trains on (``data.stage_to``: a local copy of it), its notes printed on rank 0."""
    torch.manual_seed(cfg.train.seed)
    if cfg.data.root is None:
        raise UserError("data.root is not set: pass --set data.root=PATH (make a demo root with "
                        "`python -m helpers demo-data data/demo`)")
    data = open_data(training_root(cfg.data, announce=main), cfg.data.layout, cfg.data.max_image_pixels,
                     cfg.data.follow_links)
    for note in data.notes if main else ():
        print(f"note: {note}", file=sys.stderr)
    if main:
        print(data.pair_source("val"), flush=True)
    return data


def measured_board(cfg: Config) -> Leaderboard:
    """The term's leaderboard where a run of ``cfg`` can measure it on val/dev; val EER's where the combined
    score's top-1 has no dev images of the training identities (the data is opened to see)."""
    leaderboard = get_term(cfg.course.term).leaderboard
    if leaderboard.metric == "eer" or cfg.data.root is None:
        return leaderboard
    data = open_data(cfg.data.root, cfg.data.layout, cfg.data.max_image_pixels, cfg.data.follow_links)
    train_set = training_set(data, cfg.data.singletons, cfg.data.max_train_images, cfg.train.seed)
    return leaderboard if _combined_measurable(data, train_set) else BY_EER


def _combined_measurable(data: FaceData, train_set: TrainingSet) -> bool:
    """Whether the combined score can be measured: val pairs, and dev images of identities the head knows."""
    return bool(data.val_pairs and known_dev_images(data, train_set.classes)[0])


def _selection(cfg: Config, data: FaceData, train_set: TrainingSet, main: bool) -> Selection:
    """What best.pt holds (``train.select``), refused where its ranking cannot be measured on this data."""
    leaderboard = get_term(cfg.course.term).leaderboard
    measurable = _combined_measurable(data, train_set)
    selection = Selection(resolve_select(cfg.train, leaderboard, measurable),
                          ("raw", "ema") if cfg.train.ema else ("raw",), leaderboard)
    if main and leaderboard.metric == "combined" and data.val_pairs and not measurable and cfg.train.select == "auto":
        print(f"note: {data.root} has no dev images of the training identities, so best.pt is chosen "
              "by val EER, not by the term's combined score")
    if selection.ranking.metric == "combined" and not measurable:
        raise UserError(f"train.select {cfg.train.select} ranks by the combined score of dev top-1 and val EER, and "
                        f"{data.root} lacks val pairs or dev images of the training identities; select best instead")
    return selection


def _loader(cfg: Config, runtime: Runtime, data: FaceData, train_set: TrainingSet,
            sampler: EpochSampler) -> torch.utils.data.DataLoader:
    """The training images in the sampler's order, decoded in ``runtime.workers`` processes (or only read, for
    decoding on the device); the workers leave a stop signal to the training process (core/signals.py)."""
    images = FaceImages(train_set.paths, train_set.labels, cfg.data.image_size, reader=data.reader,
                        encoded=runtime.decode_on_device)
    return torch.utils.data.DataLoader(images, batch_size=cfg.train.batch_size, sampler=sampler,
                                       num_workers=runtime.workers, collate_fn=collate, drop_last=True,
                                       pin_memory=runtime.device.type == "cuda", worker_init_fn=ignore_stop_signals,
                                       persistent_workers=runtime.workers > 0, generator=torch.Generator())


@contextmanager
def run_folder(cfg: Config, runtime: Runtime, checkpoint: Checkpoint | None = None):
    """The run folder, locked against a second training (guard.py), with its ``config.yaml``, and the run's
    :class:`Tracker` (None on ranks other than 0), finished on exit. The temporary files of saves a kill
    interrupted are removed first. A resume drops the records logged after its checkpoint (that work is
    redone), and those of another run it was told to take over are set aside (tracking.py)."""
    if not runtime.dist.main:
        yield None
        return
    folder = run_directory(cfg)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the run folder {folder}: {error.strerror or error} (run.out_dir, "
                        "run.name)") from None
    with run_lock(folder):
        for path in remove_stale_temporaries(folder):
            print(f"removed {path}, left by a save that was interrupted", file=sys.stderr)
        atomic_write_text(folder / "config.yaml", dump_config(cfg))
        # The W&B run goes on only in the folder its checkpoint was saved in: a file from elsewhere (a
        # classmate's) starts a W&B run of this folder's own rather than writing into theirs.
        continues = checkpoint is not None and folder_note(checkpoint, folder) is None
        tracker = Tracker(folder, cfg, run_id=checkpoint.wandb_run_id if continues else None, name=folder.name)
        try:
            if checkpoint is not None:
                tracker.truncate(checkpoint.step, checkpoint.run_id)
            yield tracker
        finally:
            tracker.finish()


def load_weights(model: FaceModel, path: str | Path, classes: list[str], announce: bool = True) -> None:
    """Start a new model from another run's weights (the fine-tune phases, or a deeper or wider model): every
    tensor whose name and shape fit is taken, the rest starts fresh and is counted. The margin head is taken
    only when the classes match (its rows are the classes)."""
    source = Checkpoint.load(path)
    weights = source.model_weights(source=path)
    same_classes = source.classes == classes
    own = model.state_dict()
    fitting = {name: value for name, value in weights.items() if name in own and (same_classes or not
               name.startswith("head.")) and tuple(getattr(value, "shape", ())) == tuple(own[name].shape)}
    if not fitting:
        raise UserError(f"none of the weights in {path} fit this model: {weights_misfit(model, weights)}")
    model.load_state_dict(fitting, strict=False)
    if announce:
        notes = [] if same_classes else ["margin head left fresh: the classes differ"]
        fresh = [name for name in own if name not in fitting and (same_classes or not name.startswith("head."))]
        if fresh:
            notes.append(f"{len(fresh)} of {len(own)} tensors left fresh, e.g. {fresh[0]}: the model.* settings "
                         "differ")
        print(f"initialised from {path}" + (f" ({'; '.join(notes)})" if notes else ""))
